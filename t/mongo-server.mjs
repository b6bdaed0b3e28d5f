// Starts the MongoDB-wire-compatible in-memory server (CongoDB from the npm
// package @push.rocks/smartmongo) for the test stack when no mongod exists.
// CONGO_LIB points at the installed congodb/index.js, PORT at the port.

const lib = process.env.CONGO_LIB;
const port = Number(process.env.PORT || 27117);
const { CongoServer } = await import(lib);

const server = new CongoServer({ port, host: '127.0.0.1' });
await server.start();
console.log(`mongo-compatible server on 127.0.0.1:${port}`);

for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, async () => {
        await server.stop();
        process.exit(0);
    });
}
