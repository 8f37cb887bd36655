/**
 * The drain window of a stopping API server. It keeps the idle keep-alive connections open
 * for a short while, so that the server reads a request that a client is already sending on
 * one. The server then responds with a 503 and `Connection: close`, where a closed socket
 * would send a TCP reset.
 */
import type http from 'node:http';
import net from 'node:net';

/**
 * Stops `server` accepting connections but leaves its open connections as they are, and
 * returns a promise that resolves once no connection is open or `windowMs` has passed. Resolves
 * at once for a server that is not listening.
 *
 * Read from Node 20.20 (lib/_http_server.js, lib/net.js) and Fastify 5.12 (fastify.js):
 * Fastify's `close` runs the preClose hooks and then calls `server.close()`, and with its
 * default `forceCloseConnections: 'idle'` it leaves the idle connections to Node. Node's
 * `http.Server.prototype.close` calls `closeIdleConnections()` and then
 * `net.Server.prototype.close`. Calling the latter alone here closes the listening socket,
 * and so frees the port, without closing any connection.
 *
 * The later `server.close()` from Fastify still closes the connections that are then idle.
 * Because the listener is already closed, Node passes ERR_SERVER_NOT_RUNNING to that call's
 * callback once the last connection closes, which Fastify treats as a normal end. Node
 * (`_emitCloseIfDrained`) emits `close` each time `close()` is called with no handle and no
 * connection, so `close` may come twice: once in the window and once after Fastify's call.
 *
 * NOTE: with API_HOST=localhost, Fastify also listens on the other addresses of localhost
 * through secondary servers, which it closes, idle connections included, on the main server's
 * `close`. Connections to those addresses get no drain window.
 */
export function stopAccepting(server: http.Server, windowMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      server.off('close', finish);
      resolve();
    };
    const timer = setTimeout(finish, windowMs);
    // With the listener closed, Node emits `close` when the last connection closes, and on the
    // next tick if none is open now.
    server.on('close', finish);
    net.Server.prototype.close.call(server);
  });
}
