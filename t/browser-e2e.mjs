// The browser client (/app/) and Swagger UI (/docs/) in headless Chromium,
// driven by puppeteer-core.  Used by t/511-browser.t.
//
//   CHAT_DOCS_TOOLS=.work/docs-tools node t/browser-e2e.mjs GATEWAY_URL \
//       SCREENSHOT_DIR
//
// Two users in two browser contexts register, become friends and open
// their room through the UI; A's message must appear in B's window within
// a second (from A's click to B's DOM, both timed by the pages' clocks);
// with CHAT_NGINX_PID, nginx is reloaded under the open streams and A
// must get B's next message through its resumed stream.
// Waits for loading are generous; only that latency is strict.  One JSON
// line per check: {"ok","name","diag"}; the latency as {"latency_ms"}.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

const require = createRequire(
    join(resolve(process.env.CHAT_DOCS_TOOLS ?? '.work/docs-tools'), 'x.js'));
const puppeteer = require('puppeteer-core');

const [gw, shots] = process.argv.slice(2);
const chromium = process.env.CHAT_CHROMIUM ?? '/usr/bin/chromium';
const slow = { timeout: 20000 };

mkdirSync(shots, { recursive: true });

function report(ok, name, diag = '') {
    console.log(JSON.stringify({ ok: !!ok, name, diag: String(diag) }));
}

const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

const problems = [];

async function newWindow(name) {
    const ctx = await browser.createBrowserContext();
    const page = await ctx.newPage();

    await page.setViewport({ width: 1100, height: 700 });

    // the gateway's Content-Security-Policy must not stop anything we
    // ship; but for Swagger UI's icons, data: images its stylesheet holds
    // (img-src falls back to 'self': they are left out, nothing else)
    page.on('console', (m) => {
        const t = m.text();

        if (m.type() === 'error' && /Content.Security.Policy/i.test(t)
            && !(name === 'docs' && /^Loading the image 'data:/.test(t)))
        {
            problems.push(`${name}: ${t}`);
        }
    });
    page.on('pageerror', (e) => problems.push(`${name}: ${e.message}`));

    return page;
}

async function register(page, user) {
    await page.goto(`${gw}/app/`, { waitUntil: 'load', ...slow });
    await page.type('#register-email', user.email);
    await page.type('#register-username', user.username);
    await page.type('#register-password', user.password);
    await page.click('#register-submit');
    await page.waitForSelector('#chat-view:not([hidden])', slow);
    user.id = await page.evaluate(async () => {
        const r = await fetch('/api/profile/me', { headers: {
            Authorization: `Bearer ${sessionStorage.getItem('chat.token')}`,
        } });
        return (await r.json()).id;
    });
}

const tag = `br${process.pid}${Date.now() % 100000}`;
const a = { email: `${tag}a@example.com`, username: `${tag}a`,
            password: 'Passw0rd!' };
const b = { email: `${tag}b@example.com`, username: `${tag}b`,
            password: 'Passw0rd!' };

try {
    const pa = await newWindow('A');
    const pb = await newWindow('B');

    await Promise.all([register(pa, a), register(pb, b)]);
    report(a.id && b.id, 'both users registered and logged in in the UI');

    // A finds B and asks; B accepts the request the notification brought
    await pa.type('#search-input', b.username);
    await pa.click('#search-submit');
    await pa.waitForSelector(
        `#search-results li[data-user-id="${b.id}"] .add-friend`, slow);
    await pa.click(`#search-results li[data-user-id="${b.id}"] .add-friend`);

    await pb.waitForSelector(
        `#requests li.received[data-user-id="${a.id}"] .accept`, slow);
    report(true, "A's friend request reached B's window");
    await pb.click(`#requests li.received[data-user-id="${a.id}"] .accept`);

    await pa.waitForSelector(`#friends li[data-user-id="${b.id}"]`, slow);
    report(true, "B's acceptance reached A's window");

    // both open their room and wait until its stream is live
    await pa.click(`#friends li[data-user-id="${b.id}"] .chat-with`);
    await pb.waitForSelector(`#friends li[data-user-id="${a.id}"]`, slow);
    await pb.click(`#friends li[data-user-id="${a.id}"] .chat-with`);
    await Promise.all([pa.waitForSelector('#messages[data-live]', slow),
                       pb.waitForSelector('#messages[data-live]', slow)]);

    const roomA = await pa.$eval('#messages', (e) => e.dataset.live);
    const roomB = await pb.$eval('#messages', (e) => e.dataset.live);
    report(roomA === roomB, 'both windows show the same room, live',
           `${roomA} ${roomB}`);

    // B's window notes when the text appears; A's notes the click
    const text = `hello from A ${tag}`;

    await pb.evaluate((text) => {
        window.seenAt = 0;
        new MutationObserver(() => {
            if (!window.seenAt
                && document.getElementById('messages').textContent
                           .includes(text))
            {
                window.seenAt = Date.now();
            }
        }).observe(document.getElementById('messages'),
                   { childList: true, subtree: true, characterData: true });
    }, text);

    await pa.$eval('#message-input', (e, text) => { e.value = text; }, text);
    const sentAt = await pa.evaluate(() => {
        const t = Date.now();
        document.getElementById('send-button').click();
        return t;
    });

    await pb.waitForFunction(() => window.seenAt > 0, { timeout: 10000 })
        .catch(() => {});
    const seenAt = await pb.evaluate(() => window.seenAt);
    const latency = seenAt ? seenAt - sentAt : null;

    console.log(JSON.stringify({ latency_ms: latency }));
    report(latency !== null && latency <= 1000,
           "A's message appears in B's window within 1 s",
           `${latency} ms`);

    // and back, with the room list's unread count of the other side
    const back = `hi A ${tag}`;

    await pb.$eval('#message-input', (e, t) => { e.value = t; }, back);
    await pb.click('#send-button');
    await pa.waitForFunction((t) => document.getElementById('messages')
                                 .textContent.includes(t), slow, back);
    report(true, "B's answer appears in A's window");

    // a dropped stream (nginx reloads: its old workers end the streams):
    // what B sends meanwhile reaches A when its EventSource comes back
    // with Last-Event-ID
    const pid = process.env.CHAT_NGINX_PID;

    if (pid) {
        const count = () => pa.$$eval('#messages .message', (l) => l.length);
        const before = await count();

        process.kill(Number(pid), 'SIGHUP');
        await pa.waitForSelector('#messages:not([data-live])', slow);
        const later = `meanwhile ${tag}`;

        await pb.$eval('#message-input', (e, t) => { e.value = t; }, later);
        await pb.click('#send-button');
        await pa.waitForFunction((t) => document.getElementById('messages')
                                     .textContent.includes(t), slow, later);
        await pa.waitForSelector('#messages[data-live]', slow);

        const after = await count();
        report(after === before + 1, 'after a dropped stream A gets what'
                                     + ' was sent meanwhile, once',
               `${before} messages, then ${after}`);
    }

    await pa.waitForSelector('#notifications-badge:not(:empty)', slow)
        .then(() => report(true, 'A has an unread notification badge'))
        .catch((e) => report(false, 'A has an unread notification badge', e));

    await pa.screenshot({ path: join(shots, 'app-a.png') });
    await pb.screenshot({ path: join(shots, 'app-b.png') });
    report(true, `screenshots in ${shots}`);

    // Swagger UI renders the gateway's document
    const pd = await newWindow('docs');

    await pd.goto(`${gw}/docs`, { waitUntil: 'load', ...slow });
    await pd.waitForSelector('.swagger-ui .opblock', slow);

    const title = await pd.$eval('.swagger-ui .info .title',
                                 (e) => e.textContent);
    const ops = await pd.$$eval('.swagger-ui .opblock', (l) => l.length);

    report(/nginx-chat/.test(title), 'Swagger UI shows the API', title);
    report(ops >= 40, 'Swagger UI lists the operations', ops);
    await pd.screenshot({ path: join(shots, 'docs.png'), fullPage: false });

    report(problems.length === 0, 'no script errors, nothing blocked',
           problems.join(' | '));
} catch (e) {
    report(false, 'the browser scenario ran to its end',
           `${e.message} ${problems.join(' | ')}`);
} finally {
    await browser.close();
}
