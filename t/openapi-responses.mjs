// Real answers of a running stack against the documented ones: for a
// representative request per operation (its success and its main errors)
// the status must be one the document lists for the operation, the
// content type the listed one, and a JSON body must validate against the
// listed schema (JSON Schema 2020-12, ajv); the events of both streams
// must match the operation's x-sse-events.  Used by t/510-openapi.t.
//
//   CHAT_DOCS_TOOLS=.work/docs-tools node t/openapi-responses.mjs \
//       GATEWAY_URL USER_LISTENER_URL
//
// One JSON line per checked answer: {"ok","name","diag"}; then one
// {"covered":["<origin> <operation id>",...],"unserved":[...]} line.
// An operation of the contract's section 12 that answers as an unknown
// route (404 "Not Found" or 405) is reported as unserved, not checked.

import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const require = createRequire(
    join(resolve(process.env.CHAT_DOCS_TOOLS ?? '.work/docs-tools'), 'x.js'));
const Ajv2020 = require('ajv/dist/2020').default;

const [gw, userListener] = process.argv.slice(2);
const section12 = new Set(['F8', 'F9', 'C13', 'N5', '12.1']);

// each listener's own document, a schema of ajv's by its origin
const ajv = new Ajv2020({ strict: false, validateFormats: false,
                          allErrors: true });
const docs = {};

for (const base of [gw, userListener]) {
    const origin = new URL(base).origin;

    docs[origin] = await (await fetch(`${base}/openapi.json`)).json();
    ajv.addSchema({ ...docs[origin], $id: `${origin}/openapi.json` });
}

const covered = new Set();
const unserved = new Set();

// the operation of a URL in its listener's document; templates with
// fewer parameters first: "/api/messages/read" before "/api/messages/{id}"
function operation(method, url) {
    const u = new URL(url);
    const doc = docs[u.origin];
    const templates = Object.keys(doc.paths).map((p) => ({
        path: p,
        params: (p.match(/\{/g) ?? []).length,
        re: new RegExp('^' + p.replace(/\{[^}]+\}/g, '[^/]+') + '$'),
    })).sort((a, b) => a.params - b.params);

    for (const t of templates) {
        const op = doc.paths[t.path][method.toLowerCase()];
        if (t.re.test(u.pathname) && op) {
            return { op, path: t.path, doc, origin: u.origin };
        }
    }

    return null;
}

function deref(doc, obj) {
    while (obj && obj.$ref) {
        obj = obj.$ref.slice(2).split('/')
            .map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'))
            .reduce((o, k) => o[k], doc);
    }
    return obj;
}

function pointer(origin, ...keys) {
    const escaped = keys.map((k) => String(k).replace(/~/g, '~0')
                                              .replace(/\//g, '~1'));

    return `${origin}/openapi.json#/${escaped.join('/')}`;
}

function report(ok, name, diag) {
    console.log(JSON.stringify({ ok, name, diag }));
}

// one request; checks the answer; returns { status, body }
async function call(name, method, url, opts = {}) {
    const headers = { ...(opts.headers ?? {}) };
    let body = opts.body;

    if (opts.token) {
        headers.Authorization = `Bearer ${opts.token}`;
    }

    if (opts.json !== undefined) {
        headers['Content-Type'] = 'application/json';
        body = JSON.stringify(opts.json);
    }

    const ac = new AbortController();
    const res = await fetch(url, { method, headers, body, redirect: 'manual',
                                   signal: ac.signal });
    const type = res.headers.get('content-type') ?? '';
    let text = '';

    if (type.startsWith('text/event-stream')) {
        ac.abort();
    } else {
        text = await res.text();
    }

    const found = operation(method, url);
    const label = `${name}: ${method} ${new URL(url).pathname} ${res.status}`;

    if (!found) {
        report(false, label, 'no documented operation');
        return { status: res.status };
    }

    const { op, path, doc, origin } = found;
    const id = op.operationId;

    if (section12.has(op['x-contract'])
        && (res.status === 405 || (res.status === 404
                                   && text === '{"detail":"Not Found"}')))
    {
        unserved.add(`${origin} ${id}`);
        return { status: res.status };
    }

    const response = deref(doc, op.responses[res.status]);

    if (!response) {
        report(false, label, `status not documented for ${id}: ${text}`);
        return { status: res.status };
    }

    covered.add(`${origin} ${id}`);

    const media = Object.keys(response.content ?? {});
    const mtype = media.find((m) => type.startsWith(m));

    if (media.length && !mtype) {
        report(false, label, `content type ${type}, documented: ${media}`);
        return { status: res.status };
    }

    let json;

    if (mtype === 'application/json') {
        try {
            json = JSON.parse(text);
        } catch (e) {
            report(false, label, `not JSON: ${text}`);
            return { status: res.status };
        }

        const schema = { $ref: schemaPointer(doc, origin, path, method,
                                             res.status) };
        const validate = ajv.compile(schema);

        if (!validate(json)) {
            report(false, label,
                   `${ajv.errorsText(validate.errors)}: ${text}`);
            return { status: res.status, body: json };
        }
    }

    report(true, label, '');
    return { status: res.status, body: json, headers: res.headers };
}

// the JSON pointer of a response's schema, through a components.responses
// reference where there is one
function schemaPointer(doc, origin, path, method, status) {
    const r = doc.paths[path][method.toLowerCase()].responses[status];

    if (r.$ref) {
        const name = r.$ref.split('/').pop();
        return pointer(origin, 'components', 'responses', name, 'content',
                       'application/json', 'schema');
    }

    return pointer(origin, 'paths', path, method.toLowerCase(), 'responses',
                   status, 'content', 'application/json', 'schema');
}

function expect(res, status, name) {
    if (res.status !== status) {
        report(false, `${name}: expected ${status}`, `got ${res.status}`);
    }
    return res;
}

const tag = `oa${process.pid}${Date.now() % 100000}`;
const password = 'Passw0rd!';

async function newUser(n) {
    const email = `${tag}${n}@example.com`;
    const r = await call(`register ${n}`, 'POST', `${gw}/api/auth/register`,
                         { json: { email, username: `${tag}${n}`,
                                   password, display_name: `User ${n}` } });
    const t = await call(`login ${n}`, 'POST', `${gw}/api/auth/login/json`,
                         { json: { email, password } });
    return { id: r.body.id, token: t.body.access_token, email };
}

const a = await newUser('a');
const b = await newUser('b');
const c = await newUser('c');

// the user service
expect(await call('register again', 'POST', `${gw}/api/auth/register`,
                  { json: { email: a.email, username: `${tag}a`,
                            password } }), 409, 'register again');
expect(await call('register, schema', 'POST', `${gw}/api/auth/register`,
                  { json: { email: 'x', username: 'x', password: 'p' } }),
       422, 'register, schema');
expect(await call('register, rules', 'POST', `${gw}/api/auth/register`,
                  { json: { email: `${tag}z@example.com`, username: 'a$$b',
                            password: 'pppppppp' } }), 422, 'rules');
expect(await call('login, wrong password', 'POST',
                  `${gw}/api/auth/login/json`,
                  { json: { email: a.email, password: 'Wrong-123' } }),
       401, 'wrong password');
expect(await call('form login', 'POST', `${gw}/api/auth/login`,
                  { headers: { 'Content-Type':
                                   'application/x-www-form-urlencoded' },
                    body: `username=${encodeURIComponent(a.email)}`
                          + `&password=${encodeURIComponent(password)}` }),
       200, 'form login');
expect(await call('form login, JSON', 'POST', `${gw}/api/auth/login`,
                  { json: { username: a.email, password } }), 422, 'form');

const T = { token: a.token };
expect(await call('profile', 'GET', `${gw}/api/profile/me`, T), 200, 'me');
expect(await call('profile, no token', 'GET', `${gw}/api/profile/me`),
       401, 'no token');
expect(await call('profile update', 'PUT', `${gw}/api/profile/me`,
                  { ...T, json: { status_message: 'hi' } }), 200, 'put');
expect(await call('profile update, long', 'PUT', `${gw}/api/profile/me`,
                  { ...T, json: { display_name: 'x'.repeat(101) } }),
       422, 'put long');

const png = Buffer.from(
    '89504e470d0a1a0a0000000d4948445200000001000000010806000000'
    + '1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44'
    + 'ae426082', 'hex');
const form = new FormData();
form.append('file', new Blob([png], { type: 'image/png' }), 'a.png');
const img = expect(await call('image upload', 'POST',
                              `${gw}/api/profile/me/image`,
                              { ...T, body: form }), 200, 'image');
if (img.body?.profile_image_url) {
    expect(await call('image', 'GET',
                      new URL(img.body.profile_image_url, gw).href),
           200, 'uploaded image');
}
expect(await call('no such upload', 'GET', `${gw}/uploads/${tag}.png`),
       404, 'no upload');
expect(await call('image removal', 'DELETE', `${gw}/api/profile/me/image`,
                  T), 200, 'image removal');

expect(await call('profile by id', 'GET', `${gw}/api/profile/${b.id}`, T),
       200, 'profile by id');
expect(await call('profile 0', 'GET', `${gw}/api/profile/0`, T), 422, 'p0');
expect(await call('search', 'GET',
                  `${gw}/api/users/search?query=${tag}`, T), 200, 'search');
expect(await call('search, no query', 'GET', `${gw}/api/users/search`, T),
       422, 'search no query');
expect(await call('users', 'GET',
                  `${gw}/api/users?user_ids=${a.id},${b.id}`, T),
       200, 'users');
expect(await call('users, bad id', 'GET', `${gw}/api/users?user_ids=x`, T),
       400, 'users bad');
expect(await call('batch', 'POST', `${userListener}/api/users/batch`,
                  { json: { user_ids: [a.id, b.id] } }), 200, 'batch');
expect(await call('batch, empty', 'POST', `${userListener}/api/users/batch`,
                  { json: { user_ids: [] } }), 422, 'batch empty');
expect(await call('batch at the gateway', 'POST', `${gw}/api/users/batch`,
                  { json: { user_ids: [a.id] } }), 401, 'batch gateway');
expect(await call('exists', 'GET',
                  `${userListener}/api/users/${a.id}/exists`), 200, 'exists');
expect(await call('exists at the gateway', 'GET',
                  `${gw}/api/users/${a.id}/exists`, T), 200, 'exists gw');
expect(await call('exists, bad id', 'GET',
                  `${userListener}/api/users/x/exists`), 422, 'exists bad');
expect(await call('user', 'GET', `${gw}/api/users/${b.id}`, T), 200, 'user');
expect(await call('unknown user', 'GET', `${gw}/api/users/999999999`, T),
       404, 'unknown user');
expect(await call('user, bad id', 'GET', `${gw}/api/users/abc`, T),
       422, 'user bad id');

// the friend service
expect(await call('friend request', 'POST', `${gw}/api/friends/request`,
                  { ...T, json: { user_id_2: b.id } }), 201, 'request');
expect(await call('friend request again', 'POST',
                  `${gw}/api/friends/request`,
                  { ...T, json: { user_id_2: b.id } }), 400, 'again');
expect(await call('friend request, unknown', 'POST',
                  `${gw}/api/friends/request`,
                  { ...T, json: { user_id_2: 999999999 } }), 404, 'unknown');
expect(await call('friend request, no id', 'POST',
                  `${gw}/api/friends/request`, { ...T, json: {} }),
       422, 'no id');
expect(await call('requests', 'GET', `${gw}/api/friends/requests`,
                  { token: b.token }), 200, 'requests');
expect(await call('accept', 'PUT', `${gw}/api/friends/status/${a.id}`,
                  { token: b.token, json: { action: 'accept' } }),
       200, 'accept');
expect(await call('accept again', 'PUT', `${gw}/api/friends/status/${a.id}`,
                  { token: b.token, json: { action: 'accept' } }),
       400, 'accept again');
expect(await call('friends', 'GET', `${gw}/api/friends/list`, T),
       200, 'list');
expect(await call('request to c', 'POST', `${gw}/api/friends/request`,
                  { ...T, json: { user_id_2: c.id } }), 201, 'to c');
expect(await call('cancel', 'DELETE', `${gw}/api/friends/request/${c.id}`,
                  T), 200, 'cancel');
expect(await call('cancel again', 'DELETE',
                  `${gw}/api/friends/request/${c.id}`, T), 400, 'cancel 2');
expect(await call('friend search', 'GET',
                  `${gw}/api/friends/search?query=${tag}`, T), 200, 'fsearch');
await call('online friends', 'GET', `${gw}/api/friends/online`, T);
await call('remove a non-friend', 'DELETE', `${gw}/api/friends/${c.id}`, T);
await call('block', 'POST', `${gw}/api/friends/block`,
           { ...T, json: { blocked_user_id: c.id } });
await call('block again', 'POST', `${gw}/api/friends/block`,
           { ...T, json: { blocked_user_id: c.id } });
await call('block oneself', 'POST', `${gw}/api/friends/block`,
           { ...T, json: { blocked_user_id: a.id } });
await call('blocked', 'GET', `${gw}/api/friends/blocked`, T);
await call('unblock', 'DELETE', `${gw}/api/friends/block/${c.id}`, T);
await call('unblock again', 'DELETE', `${gw}/api/friends/block/${c.id}`, T);

// the chat service
const room = expect(await call('room', 'GET',
                               `${gw}/api/chat-rooms/check/${b.id}`, T),
                    200, 'room').body ?? { id: 0 };
expect(await call('room with oneself', 'GET',
                  `${gw}/api/chat-rooms/check/${a.id}`, T), 422, 'self');
expect(await call('room with nobody', 'GET',
                  `${gw}/api/chat-rooms/check/999999999`, T), 404, 'nobody');
expect(await call('rooms', 'GET', `${gw}/api/chat-rooms`, T), 200, 'rooms');
expect(await call('rooms, limit 0', 'GET', `${gw}/api/chat-rooms?limit=0`,
                  T), 422, 'limit 0');
expect(await call('a room', 'GET', `${gw}/api/chat-rooms/${room.id}`, T),
       200, 'a room');
expect(await call('another\'s room', 'GET',
                  `${gw}/api/chat-rooms/${room.id}`, { token: c.token }),
       403, 'forbidden');
expect(await call('no room', 'GET', `${gw}/api/chat-rooms/999999999`, T),
       404, 'no room');

const msg = expect(await call('send', 'POST', `${gw}/api/messages/${room.id}`,
                              { ...T, json: { content: 'hello' } }),
                   201, 'send').body ?? { id: '0' };
expect(await call('send blanks', 'POST', `${gw}/api/messages/${room.id}`,
                  { ...T, json: { content: '   ' } }), 400, 'blanks');
expect(await call('send too long', 'POST', `${gw}/api/messages/${room.id}`,
                  { ...T, json: { content: 'x'.repeat(301) } }), 422, 'long');
expect(await call('send elsewhere', 'POST', `${gw}/api/messages/${room.id}`,
                  { token: c.token, json: { content: 'x' } }), 403, 'else');
expect(await call('page', 'GET', `${gw}/api/messages/${room.id}?limit=5`,
                  { token: b.token }), 200, 'page');
expect(await call('read', 'POST', `${gw}/api/messages/read`,
                  { token: b.token,
                    json: { room_id: room.id, message_ids: [msg.id] } }),
       200, 'read');
expect(await call('read nothing', 'POST', `${gw}/api/messages/read`,
                  { token: b.token,
                    json: { room_id: room.id, message_ids: [] } }),
       400, 'read nothing');
expect(await call('unread', 'GET',
                  `${gw}/api/messages/room/${room.id}/unread-count`, T),
       200, 'unread');
expect(await call('edit', 'PUT', `${gw}/api/messages/${msg.id}`,
                  { ...T, json: { content: 'hello!' } }), 200, 'edit');
expect(await call('edit another\'s', 'PUT', `${gw}/api/messages/${msg.id}`,
                  { token: b.token, json: { content: 'no' } }), 403, 'edit b');
expect(await call('react', 'POST', `${gw}/api/messages/${msg.id}/reactions`,
                  { token: b.token, json: { emoji: '👍' } }), 201, 'react');
expect(await call('react again', 'POST',
                  `${gw}/api/messages/${msg.id}/reactions`,
                  { token: b.token, json: { emoji: '👍' } }), 200, 'again');
expect(await call('reactions', 'GET',
                  `${gw}/api/messages/${msg.id}/reactions`, T),
       200, 'reactions');
expect(await call('unreact', 'DELETE',
                  `${gw}/api/messages/${msg.id}/reactions/`
                  + encodeURIComponent('👍'), { token: b.token }),
       200, 'unreact');
expect(await call('unreact again', 'DELETE',
                  `${gw}/api/messages/${msg.id}/reactions/`
                  + encodeURIComponent('👍'), { token: b.token }),
       404, 'unreact again');
await call('typing', 'POST', `${gw}/api/messages/${room.id}/typing`,
           { ...T, json: { is_typing: true } });
expect(await call('delete another\'s', 'DELETE',
                  `${gw}/api/messages/${msg.id}`, { token: b.token }),
       403, 'delete b');
expect(await call('delete', 'DELETE', `${gw}/api/messages/${msg.id}`, T),
       200, 'delete');
expect(await call('delete again', 'DELETE', `${gw}/api/messages/${msg.id}`,
                  T), 400, 'delete again');
expect(await call('no message', 'DELETE',
                  `${gw}/api/messages/000000000000000000000000`, T),
       404, 'no message');
expect(await call('stream', 'GET', `${gw}/api/messages/stream/${room.id}`
                  + `?access_token=${a.token}`), 200, 'stream');
expect(await call('stream, no token', 'GET',
                  `${gw}/api/messages/stream/${room.id}`), 401, 'stream 401');
expect(await call('stream, no room', 'GET',
                  `${gw}/api/messages/stream/999999999`, T), 404, 'st 404');

// the event streams: each event's data against its schema in the
// operation's x-sse-events; the events the triggers cause must all come
async function events(name, url, trigger, wanted) {
    const origin = new URL(url).origin;
    const { op } = operation('GET', url);
    const listed = op['x-sse-events'];
    const ac = new AbortController();
    const seen = new Set();
    const timer = setTimeout(() => ac.abort(), 8000);
    let buf = '';
    let triggered = false;

    try {
        const res = await fetch(url, { signal: ac.signal });
        const decoder = new TextDecoder();

        for await (const chunk of res.body) {
            buf += decoder.decode(chunk, { stream: true });

            let end;

            while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
                const frame = buf.slice(0, end);
                buf = buf.slice(end).replace(/^\r?\n\r?\n/, '');

                const event = /^event: (.*)$/m.exec(frame)?.[1];
                const data = /^data: (.*)$/m.exec(frame)?.[1];

                if (!event) {
                    continue;
                }

                const label = `${name}: event ${event}`;
                const entry = listed[event];

                if (!entry) {
                    report(false, label, 'not in x-sse-events');
                    continue;
                }

                if (entry.id !== /^id: /m.test(frame)) {
                    report(false, label, `id: line expected: ${entry.id}`);
                }

                const ref = entry.schema.$ref.slice(1);
                const validate = ajv.compile(
                    { $ref: `${origin}/openapi.json#${ref}` });
                const json = JSON.parse(data);

                if (!seen.has(event)) {
                    report(validate(json), label,
                           validate.errors
                           ? `${ajv.errorsText(validate.errors)}: ${data}`
                           : '');
                }

                seen.add(event);

                if (event === 'connected' && !triggered) {
                    triggered = true;
                    await trigger();
                }
            }

            if (wanted.every((e) => seen.has(e))) {
                break;
            }
        }
    } catch (e) {
        // the timer: what is missing is reported below
    } finally {
        clearTimeout(timer);
        ac.abort();
    }

    const missing = wanted.filter((e) => !seen.has(e));
    report(missing.length === 0, `${name}: the events came`,
           missing.length ? `missing: ${missing}` : '');
}

await events('room stream',
             `${gw}/api/messages/stream/${room.id}?access_token=${a.token}`,
             async () => {
    const m = (await call('send to the stream', 'POST',
                          `${gw}/api/messages/${room.id}`,
                          { ...T, json: { content: 'live' } })).body;
    await call('read, streamed', 'POST', `${gw}/api/messages/read`,
               { token: b.token,
                 json: { room_id: room.id, message_ids: [m.id] } });
    await call('react, streamed', 'POST',
               `${gw}/api/messages/${m.id}/reactions`,
               { token: b.token, json: { emoji: 'ok' } });
    await call('edit, streamed', 'PUT', `${gw}/api/messages/${m.id}`,
               { ...T, json: { content: 'live!' } });
    await call('delete, streamed', 'DELETE', `${gw}/api/messages/${m.id}`,
               T);
}, ['connected', 'new_message', 'messages_read', 'reaction_updated',
    'message_updated', 'message_deleted']);

await events('notification stream',
             `${gw}/api/notifications/stream?access_token=${b.token}`,
             async () => {
    await call('send, notified', 'POST', `${gw}/api/messages/${room.id}`,
               { ...T, json: { content: 'for the notifications' } });
    await new Promise((r) => setTimeout(r, 500));
    await call('read, notified', 'POST', `${gw}/api/notifications/read`,
               { token: b.token, json: { all: true } });
}, ['connected', 'notification', 'notifications_read']);

// the notification service
expect(await call('notifications', 'GET', `${gw}/api/notifications`,
                  { token: b.token }), 200, 'notifications');
expect(await call('notifications, limit 0', 'GET',
                  `${gw}/api/notifications?limit=0`, T), 422, 'n limit');
expect(await call('notification stream', 'GET',
                  `${gw}/api/notifications/stream?access_token=${b.token}`),
       200, 'n stream');
expect(await call('notification stream, no token', 'GET',
                  `${gw}/api/notifications/stream`), 401, 'n stream 401');
expect(await call('notifications read', 'POST',
                  `${gw}/api/notifications/read`,
                  { token: b.token, json: { all: true } }), 200, 'n read');
expect(await call('notifications read nothing', 'POST',
                  `${gw}/api/notifications/read`,
                  { token: b.token, json: {} }), 400, 'n read nothing');

// what nginx answers itself
expect(await call('health', 'GET', `${gw}/health`), 200, 'health');
expect(await call('service', 'GET', `${userListener}/`), 200, 'service');
await call('ready', 'GET', `${gw}/ready`);
expect(await call('metrics', 'GET', `${gw}/metrics`), 200, 'metrics');
expect(await call('ping', 'GET', `${gw}/ping`), 200, 'ping');
expect(await call('openapi', 'GET', `${gw}/openapi.json`), 200, 'openapi');
await call('services', 'GET', `${gw}/health/services`);
await call('circuits', 'GET', `${gw}/health/circuits`);

// last: the token ends
expect(await call('logout', 'POST', `${gw}/api/auth/logout`, T), 200, 'out');
expect(await call('after logout', 'GET', `${gw}/api/profile/me`, T),
       401, 'after logout');

console.log(JSON.stringify({ covered: [...covered].sort(),
                             unserved: [...unserved].sort() }));
