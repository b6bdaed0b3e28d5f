// OpenAPI 3.1 validation of documents (the specification's own JSON
// schemas, @seriousme/openapi-schema-validator).  Used by t/510-openapi.t.
//
//   CHAT_DOCS_TOOLS=.work/docs-tools node t/openapi-validate.mjs FILE...
//
// One JSON line per file: {"file","valid","version","errors"}.

import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const require = createRequire(
    join(resolve(process.env.CHAT_DOCS_TOOLS ?? '.work/docs-tools'), 'x.js'));
const { Validator } = await import(
    require.resolve('@seriousme/openapi-schema-validator'));

for (const file of process.argv.slice(2)) {
    const v = new Validator();
    const r = await v.validate(file);

    console.log(JSON.stringify({ file, valid: r.valid, version: v.version,
                                 errors: r.errors ?? null }));
}
