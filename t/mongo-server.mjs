// Starts the MongoDB-wire-compatible in-memory server (CongoDB from the npm
// package @push.rocks/smartmongo) for the test stack when no mongod exists.
// CONGO_LIB points at the installed congodb/index.js, PORT at the port.

const lib = process.env.CONGO_LIB;
const port = Number(process.env.PORT || 27117);
const { CongoServer } = await import(lib);
const { HelloHandler } = await import(
    new URL('./server/handlers/index.js', 'file://' + lib).href);

// Drivers monitor a server with "awaitable hello": the server holds the
// reply until its topology changes or maxAwaitTimeMS passes.  CongoDB
// answers at once, with a new topologyVersion every time, so every
// client's monitor would spin on it.  Hold the reply and keep the version
// stable, as a standalone mongod does.
const processId = (await HelloHandler.prototype.handle.call(
    new HelloHandler(), { command: { hello: 1 } })).topologyVersion.processId;
const handle = HelloHandler.prototype.handle;

HelloHandler.prototype.handle = async function (context) {
    const { command } = context;

    if (command.topologyVersion && command.maxAwaitTimeMS) {
        await new Promise((resolve) =>
            setTimeout(resolve, Number(command.maxAwaitTimeMS)));
    }

    const response = await handle.call(this, context);

    if (response.topologyVersion) {
        response.topologyVersion.processId = processId;
    }

    return response;
};

const server = new CongoServer({ port, host: '127.0.0.1' });
await server.start();
console.log(`mongo-compatible server on 127.0.0.1:${port}`);

for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, async () => {
        await server.stop();
        process.exit(0);
    });
}
