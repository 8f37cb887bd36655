/**
 * Closing in stages, as RFC 9112 section 9.6 (Tear-down) describes, of a connection whose error
 * response was sent before the request body arrived (a 413, or a 401 before the body was read).
 */
import type http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** A response as Node keeps it on its socket, with the flag that it closes the connection. */
type SocketResponse = http.ServerResponse & { _last?: boolean };

/** Sockets whose requests got an error response before their body arrived. */
export class BodyDrains {
  /** Sockets that closeAfterBody handles, from the error response on. */
  readonly #handled = new WeakSet<Socket>();
  /** Sockets whose last response was sent, and which only drop the rest of a body. */
  readonly #lingering = new Set<Socket>();
  /** Set once the server stops, after which no socket lingers. */
  #stopped = false;

  /**
   * Makes the socket of `request` close in stages when Node closes it after the error
   * response. Node's own close destroys the socket with the body unread, and the kernel then
   * resets the connection. A client that sends the whole body before it reads then gets a
   * broken pipe in place of the error. Here the server ends its side and goes on reading, and
   * Node's parser drops the rest of the body. The socket closes once the body has arrived or
   * the client closes, or after `maxMs`.
   */
  closeAfterBody(request: http.IncomingMessage, maxMs: number): void {
    const socket = request.socket as Socket;
    this.#handled.add(socket);
    // Node's HTTP server closes a connection after the last response with destroySoon() when
    // the socket has it (lib/_http_server.js in Node 20), so this replaces it on one socket.
    (socket as Socket & { destroySoon: () => void }).destroySoon = () => {
      socket.end();
      // As Node's own destroySoon() does, wait until the response has left the socket's buffer.
      const destroyWhenSent = () => {
        if (socket.writableFinished) socket.destroy();
        else socket.once('finish', () => socket.destroy());
      };
      if (request.complete || this.#stopped) {
        destroyWhenSent();
        return;
      }
      this.#lingering.add(socket);
      const timer = setTimeout(() => socket.destroy(), maxMs);
      timer.unref();
      request.once('end', destroyWhenSent);
      socket.once('close', () => {
        clearTimeout(timer);
        this.#lingering.delete(socket);
      });
    };
  }

  /**
   * Closes every socket that lingers to drop a body, and from now on closes each one once its
   * response is sent. A stopping server waits for every open connection, and a lingering one
   * would keep it from stopping for up to API_TIMEOUT.
   */
  closeAll(): void {
    this.#stopped = true;
    for (const socket of this.#lingering) socket.destroy();
  }

  /**
   * Returns whether `request` arrived on a connection that the server closes after an earlier
   * response. Node's parser goes on reading such a connection to drop a body, and so also
   * parses any request that the client sent after it. RFC 9112 section 9.6 forbids serving
   * such a request, whose response could not reach the client anyway.
   */
  isClosing(request: http.IncomingMessage): boolean {
    const socket = request.socket as Socket;
    if (!this.#handled.has(socket)) return false;
    if (this.#lingering.has(socket)) return true;
    // The earlier response may have been sent with `Connection: close` but not yet finished.
    const current = socketResponse(socket) as SocketResponse | undefined;
    return current !== undefined && current.req !== request && current._last === true;
  }
}

/**
 * Returns the response that Node is writing on the socket, if any. Node keeps it in the
 * socket's internal `_httpMessage` until it finishes (lib/_http_server.js in Node 20), and its
 * own client error handler reads the same property.
 */
export function socketResponse(socket: Duplex): http.ServerResponse | undefined {
  return (
    (socket as Duplex & { _httpMessage?: http.ServerResponse | null })._httpMessage ?? undefined
  );
}
