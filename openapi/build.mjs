// The served documents, made from openapi/openapi.json, the one source:
//
//   node openapi/build.mjs OUTDIR
//
// writes OUTDIR/openapi.json, the gateway's document (everything but the
// service listeners' own "/"), and OUTDIR/services/<name>.json for each
// service listener (user, friend, msg, notify): the paths of its tags plus
// those every listener answers.  A tag's "x-chat-service" names where its
// paths are served: a service, "*" (every listener), "services" (every
// service listener) or "gateway".  info.version comes from VERSION.

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const top = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = process.argv[2];

if (!out) {
    console.error('usage: node openapi/build.mjs OUTDIR');
    process.exit(2);
}

const source = JSON.parse(readFileSync(join(top, 'openapi/openapi.json')));
const version = readFileSync(join(top, 'VERSION'), 'utf8').trim();

const services = {
    user: 'User Service',
    friend: 'Friend Service',
    msg: 'Chat Service',
    notify: 'Notification Service',
};

const where = Object.fromEntries(
    source.tags.map((t) => [t.name, t['x-chat-service']]));

function served(tag, listener) {
    const w = where[tag];

    if (w === undefined) {
        throw new Error(`tag "${tag}" is not declared`);
    }

    if (listener === 'gateway') {
        return w !== 'services';
    }

    return w === '*' || w === 'services' || w === listener;
}

function part(listener) {
    const doc = structuredClone(source);
    const used = new Set();

    doc.info.version = version;
    doc.paths = {};

    for (const [path, item] of Object.entries(source.paths)) {
        const kept = {};

        for (const [method, op] of Object.entries(item)) {
            if (op.tags.some((t) => served(t, listener))) {
                kept[method] = op;
                op.tags.forEach((t) => used.add(t));
            }
        }

        if (Object.keys(kept).length) {
            doc.paths[path] = kept;
        }
    }

    doc.tags = doc.tags.filter((t) => used.has(t.name));

    if (listener !== 'gateway') {
        doc.info.title = `${source.info.title}: ${services[listener]}`;
    }

    return doc;
}

mkdirSync(join(out, 'services'), { recursive: true });

writeFileSync(join(out, 'openapi.json'), JSON.stringify(part('gateway')));

for (const name of Object.keys(services)) {
    writeFileSync(join(out, 'services', `${name}.json`),
                  JSON.stringify(part(name)));
}
