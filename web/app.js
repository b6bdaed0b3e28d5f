// nginx-chat's browser client: plain JavaScript against the gateway's API
// (openapi/openapi.json), no build step, nothing from elsewhere: the
// gateway's Content-Security-Policy allows scripts and connections to
// this origin only.  Live updates come from two EventSources (the room's
// stream, the user's notifications) that take the token in the query;
// EventSource reconnects by itself with Last-Event-ID, and after an error
// the browser will not retry (a 4xx) we open a new one that resumes from
// the last id seen.  Typing and presence are newer parts of the API: where
// the server does not have them yet they are left out without a word.

const $ = (id) => document.getElementById(id);

const state = {
    token: sessionStorage.getItem('chat.token'),
    me: null,
    room: null,           // the open room
    roomStream: null,
    roomLastId: '',
    notifyStream: null,
    notifyLastId: '',
    friends: new Map(),   // user id -> { username, online }
    typingSent: 0,
    typingTimers: new Map(),
    typingUnsupported: false,
};


// ---------------------------------------------------------------- API

class ApiError extends Error {
    constructor(status, body) {
        super(errorText(status, body));
        this.status = status;
        this.body = body;
    }
}

// the message of any of the API's error shapes
function errorText(status, body) {
    const d = body && body.detail;

    if (typeof d === 'string') {
        return d;
    }

    if (Array.isArray(d)) {
        return d.map((e) => `${e.loc.slice(1).join('.')}: ${e.msg}`)
                .join('; ');
    }

    if (d && d.validation_errors) {
        return d.validation_errors.map((e) => e.message).join('; ');
    }

    if (d && d.message) {
        return d.message;
    }

    if (body && body.message) {
        return body.message;
    }

    return `HTTP ${status}`;
}

async function api(method, path, json, extra = {}) {
    const headers = { ...(extra.headers || {}) };
    let body = extra.body;

    if (state.token) {
        headers.Authorization = `Bearer ${state.token}`;
    }

    if (json !== undefined) {
        headers['Content-Type'] = 'application/json';
        body = JSON.stringify(json);
    }

    const res = await fetch(path, { method, headers, body });
    const text = await res.text();
    let data = null;

    try {
        data = text ? JSON.parse(text) : null;
    } catch (e) {
        data = null;
    }

    if (res.status === 401 && state.token && !extra.noLogout) {
        signedOut('Your session has ended; please log in again.');
    }

    if (!res.ok) {
        throw new ApiError(res.status, data);
    }

    return data;
}

function showError(where, err) {
    $(where).textContent = err ? (err.message || String(err)) : '';
}


// ---------------------------------------------------------------- DOM

// an element with text content only: never HTML from the server
function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);

    for (const [k, v] of Object.entries(props)) {
        if (k === 'class') {
            e.className = v;
        } else if (k.startsWith('on')) {
            e.addEventListener(k.slice(2), v);
        } else if (k === 'text') {
            e.textContent = v;
        } else {
            e.setAttribute(k, v);
        }
    }

    for (const c of children) {
        if (c !== null && c !== undefined) {
            e.append(c);
        }
    }

    return e;
}

function button(text, onclick, cls) {
    return el('button', { type: 'button', text, onclick,
                          class: cls || '' });
}

function time(s) {
    return s ? s.replace('T', ' ').slice(0, 16) : '';
}


// ---------------------------------------------------------------- auth

async function login(email, password) {
    const t = await api('POST', '/api/auth/login/json', { email, password },
                        { noLogout: true });

    state.token = t.access_token;
    sessionStorage.setItem('chat.token', state.token);
    await start();
}

function signedOut(message) {
    state.token = null;
    state.me = null;
    state.room = null;
    sessionStorage.removeItem('chat.token');

    for (const s of [state.roomStream, state.notifyStream]) {
        if (s) {
            s.close();
        }
    }

    state.roomStream = state.notifyStream = null;
    $('chat-view').hidden = true;
    $('auth-view').hidden = false;
    $('auth-error').textContent = message || '';
}

$('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError('auth-error', null);

    try {
        await login($('login-email').value.trim(), $('login-password').value);
    } catch (e) {
        showError('auth-error', e);
    }
});

$('register-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError('auth-error', null);

    const email = $('register-email').value.trim();
    const password = $('register-password').value;

    try {
        await api('POST', '/api/auth/register', {
            email,
            username: $('register-username').value.trim(),
            password,
            display_name: $('register-display-name').value.trim() || null,
        });
        await login(email, password);
    } catch (e) {
        showError('auth-error', e);
    }
});

$('logout-button').addEventListener('click', async () => {
    try {
        await api('POST', '/api/auth/logout', undefined, { noLogout: true });
    } catch (e) {
        // the token is dropped here whatever the server said
    }
    signedOut('');
});


// ---------------------------------------------------------------- start

async function start() {
    state.me = await api('GET', '/api/profile/me');

    $('me').textContent = state.me.display_name
        ? `${state.me.display_name} (@${state.me.username})`
        : `@${state.me.username}`;
    $('auth-view').hidden = true;
    $('chat-view').hidden = false;

    openNotifyStream();
    await Promise.all([loadFriends(), loadRequests(), loadRooms(),
                       loadNotifications()]);
}


// ---------------------------------------------------------------- people

$('search-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError('chat-error', null);

    const q = encodeURIComponent($('search-input').value.trim());
    const list = $('search-results');

    try {
        const r = await api('GET', `/api/users/search?query=${q}&limit=20`);

        list.replaceChildren(...r.users.map((u) => el('li', {
            'data-user-id': u.id,
        }, el('span', { class: 'name', text: u.display_name
                  ? `${u.display_name} (@${u.username})`
                  : `@${u.username}` }),
           state.friends.has(u.id) ? null
               : button('Add', () => sendRequest(u.id), 'add-friend'),
           button('Chat', () => openRoomWith(u.id), 'chat-with'))));

        if (!r.users.length) {
            list.replaceChildren(el('li', { text: 'nobody found' }));
        }
    } catch (e) {
        showError('chat-error', e);
    }
});

async function sendRequest(id) {
    try {
        await api('POST', '/api/friends/request', { user_id_2: id });
        await loadRequests();
    } catch (e) {
        showError('chat-error', e);
    }
}

async function loadRequests() {
    const r = await api('GET', '/api/friends/requests');

    $('requests').replaceChildren(
        ...r.received_requests.map((q) => el('li', {
            class: 'request received', 'data-user-id': q.user_id,
        }, el('span', { class: 'name', text: `@${q.username}` }),
           button('Accept', () => answer(q.user_id, 'accept'), 'accept'),
           button('Reject', () => answer(q.user_id, 'reject'), 'reject'))),
        ...r.sent_requests.map((q) => el('li', {
            class: 'request sent', 'data-user-id': q.user_id,
        }, el('span', { class: 'name', text: `to @${q.username}` }),
           button('Cancel', () => cancel(q.user_id), 'cancel'))));
}

async function answer(id, action) {
    try {
        await api('PUT', `/api/friends/status/${id}`, { action });
        await Promise.all([loadRequests(), loadFriends()]);
    } catch (e) {
        showError('chat-error', e);
    }
}

async function cancel(id) {
    try {
        await api('DELETE', `/api/friends/request/${id}`);
        await loadRequests();
    } catch (e) {
        showError('chat-error', e);
    }
}

async function loadFriends() {
    const list = await api('GET', '/api/friends/list');
    let online = [];

    try {
        online = await api('GET', '/api/friends/online');
    } catch (e) {
        // presence is not served here: every friend shows as unknown
    }

    const on = new Set(online.map((f) => f.user_id));

    state.friends = new Map(list.map((f) => [f.user_id, {
        username: f.username, online: on.has(f.user_id),
    }]));
    renderFriends();
}

function renderFriends() {
    $('friends').replaceChildren(...[...state.friends].map(([id, f]) =>
        el('li', { class: 'friend', 'data-user-id': id },
           el('span', { class: f.online ? 'dot online' : 'dot',
                        title: f.online ? 'online' : 'offline' }),
           el('span', { class: 'name', text: `@${f.username}` }),
           button('Chat', () => openRoomWith(id), 'chat-with'))));
}


// ---------------------------------------------------------------- rooms

async function loadRooms() {
    const rooms = await api('GET', '/api/chat-rooms?limit=50');

    $('rooms').replaceChildren(...rooms.map((r) => {
        const other = r.participants[1];
        const last = r.last_message ? r.last_message.content : '';

        return el('li', {
            class: 'room-item' + (state.room && state.room.id === r.id
                                  ? ' active' : ''),
            'data-room-id': r.id,
            onclick: () => openRoom(r),
        }, el('span', { class: 'name', text: `@${other.username}`,
                        title: last }),
           el('span', { class: 'badge unread',
                        text: r.unread_count ? String(r.unread_count)
                                             : '' }));
    }));
}

async function openRoomWith(userId) {
    try {
        openRoom(await api('GET', `/api/chat-rooms/check/${userId}`));
    } catch (e) {
        showError('chat-error', e);
    }
}

async function openRoom(room) {
    showError('chat-error', null);

    if (state.roomStream) {
        state.roomStream.close();
        state.roomStream = null;
    }

    state.room = room;
    state.roomLastId = '';
    $('room-header').textContent =
        `Chat with @${room.participants[1].username}`;
    $('messages').replaceChildren();
    delete $('messages').dataset.live;
    $('typing').textContent = '';
    $('composer').hidden = false;

    try {
        const page = await api('GET', `/api/messages/${room.id}?limit=50`);

        page.messages.forEach(addMessage);
        if (page.messages.length) {
            state.roomLastId = page.messages[page.messages.length - 1].id;
        }
        markRead(page.messages);
    } catch (e) {
        showError('chat-error', e);
    }

    openRoomStream();
    loadRooms();
    $('message-input').focus();
}

function addMessage(m) {
    if (document.querySelector(`#messages [data-id="${m.id}"]`)) {
        return;
    }

    const mine = m.user_id === state.me.id;
    const name = mine ? 'me'
        : (m.username || `@${state.room.participants[1].username}`);

    $('messages').append(el('li', {
        class: mine ? 'message mine' : 'message', 'data-id': m.id,
    }, el('div', { class: 'content', text: m.content }),
       el('div', { class: 'meta', text: `${name} · ${time(m.created_at)}`
                                        + (m.is_edited ? ' · edited' : '') }),
       el('div', { class: 'reactions' })));

    $('messages').lastChild.scrollIntoView({ block: 'end' });
}

function markRead(messages) {
    const ids = messages.filter((m) => m.user_id !== state.me.id)
                        .map((m) => m.id);

    if (ids.length) {
        api('POST', '/api/messages/read',
            { room_id: state.room.id, message_ids: ids })
            .then(() => loadRooms())
            .catch(() => {});
    }
}

$('composer').addEventListener('submit', async (ev) => {
    ev.preventDefault();

    const input = $('message-input');
    const content = input.value;

    if (!content.trim() || !state.room) {
        return;
    }

    input.value = '';

    try {
        const m = await api('POST', `/api/messages/${state.room.id}`,
                            { content });
        addMessage(m);
    } catch (e) {
        input.value = content;
        showError('chat-error', e);
    }
});

// typing: at most one call a second; a server without it is not asked
// again
$('message-input').addEventListener('input', () => {
    const now = Date.now();

    if (!state.room || state.typingUnsupported
        || now - state.typingSent < 1000)
    {
        return;
    }

    state.typingSent = now;
    api('POST', `/api/messages/${state.room.id}/typing`, { is_typing: true })
        .catch((e) => {
            if (e.status === 404 || e.status === 405) {
                state.typingUnsupported = true;
            }
        });
});

function showTyping(ev) {
    if (!state.room || ev.room_id !== state.room.id
        || ev.user_id === state.me.id)
    {
        return;
    }

    clearTimeout(state.typingTimers.get(ev.user_id));

    if (!ev.is_typing) {
        $('typing').textContent = '';
        return;
    }

    $('typing').textContent = `@${ev.username} is typing…`;
    state.typingTimers.set(ev.user_id, setTimeout(() => {
        $('typing').textContent = '';
    }, 3000));
}


// ---------------------------------------------------------------- streams

function stream(path, lastId, handlers, onclosed, ondropped) {
    const q = new URLSearchParams({ access_token: state.token });

    if (lastId && path.startsWith('/api/messages/')) {
        q.set('last_event_id', lastId);
    }

    const es = new EventSource(`${path}?${q}`);

    for (const [name, fn] of Object.entries(handlers)) {
        es.addEventListener(name, (e) => {
            let data;

            try {
                data = JSON.parse(e.data);
            } catch (err) {
                return;
            }

            fn(data, e.lastEventId);
        });
    }

    // EventSource retries a dropped connection itself (readyState
    // CONNECTING); after an answer it will not retry (CLOSED) a new one is
    // opened a little later, resuming from the last id seen
    es.onerror = () => {
        if (es.readyState === EventSource.CLOSED && state.token) {
            setTimeout(onclosed, 3000);
        }

        if (ondropped) {
            ondropped();
        }
    };

    return es;
}

function openRoomStream() {
    const room = state.room;

    state.roomStream = stream(`/api/messages/stream/${room.id}`,
                              state.roomLastId, {
        // marks the room live (the end-to-end test waits for it)
        connected: () => {
            $('messages').dataset.live = String(room.id);
        },
        new_message: (m, id) => {
            if (id) {
                state.roomLastId = id;
            }
            addMessage(m);
            $('typing').textContent = '';
            if (m.user_id !== state.me.id) {
                markRead([m]);
            }
        },
        message_deleted: (d) => {
            const e = document.querySelector(
                `#messages [data-id="${d.message_id}"]`);
            if (e) {
                e.remove();
            }
        },
        message_updated: (d) => {
            const e = document.querySelector(
                `#messages [data-id="${d.message_id}"] .content`);
            if (e) {
                e.textContent = d.content;
            }
        },
        reaction_updated: (d) => refreshReactions(d.message_id),
        typing: showTyping,
    }, () => {
        if (state.room === room) {
            openRoomStream();
        }
    }, () => {
        delete $('messages').dataset.live;
    });
}

async function refreshReactions(id) {
    const e = document.querySelector(
        `#messages [data-id="${id}"] .reactions`);

    if (!e) {
        return;
    }

    try {
        const r = await api('GET', `/api/messages/${id}/reactions`);
        e.textContent = r.reactions.map((x) => `${x.emoji} ${x.count}`)
                                   .join('  ');
    } catch (err) {
        // the message is gone
    }
}

function openNotifyStream() {
    state.notifyStream = stream('/api/notifications/stream',
                                state.notifyLastId, {
        connected: (d) => setBadge(d.unread_count),
        notification: (n, id) => {
            state.notifyLastId = id || state.notifyLastId;
            prependNotification(n);
            bumpBadge(1);
            if (n.type === 'friend_request') {
                loadRequests().catch(() => {});
            } else if (n.type === 'friend_accepted') {
                Promise.all([loadRequests(), loadFriends()]).catch(() => {});
            } else if (n.type === 'new_message') {
                loadRooms().catch(() => {});
            }
        },
        notifications_read: (d) => setBadge(d.unread_count),
        presence: (p) => {
            const f = state.friends.get(p.user_id);
            if (f) {
                f.online = p.is_online;
                renderFriends();
            }
        },
    }, () => {
        if (state.token) {
            openNotifyStream();
        }
    });
}


// -------------------------------------------------------- notifications

function setBadge(n) {
    $('notifications-badge').textContent = n ? String(n) : '';
}

function bumpBadge(n) {
    setBadge((parseInt($('notifications-badge').textContent, 10) || 0) + n);
}

function notificationItem(n) {
    return el('li', { class: n.is_read ? 'notification'
                                       : 'notification unread',
                      'data-id': n.id },
              el('span', { class: 'name', text: `${n.title}: ${n.body}` }),
              el('small', { text: time(n.created_at) }));
}

function prependNotification(n) {
    if (!document.querySelector(`#notifications [data-id="${n.id}"]`)) {
        $('notifications').prepend(notificationItem(n));
    }
}

async function loadNotifications() {
    const r = await api('GET', '/api/notifications?limit=30');

    $('notifications').replaceChildren(...r.notifications.map(
        notificationItem));
    setBadge(r.unread_count);
}

$('notifications-button').addEventListener('click', () => {
    $('notifications-panel').hidden = !$('notifications-panel').hidden;
});

$('notifications-read').addEventListener('click', async () => {
    try {
        await api('POST', '/api/notifications/read', { all: true });
        await loadNotifications();
    } catch (e) {
        showError('chat-error', e);
    }
});


// ---------------------------------------------------------------- go

if (state.token) {
    start().catch(() => signedOut(''));
}
