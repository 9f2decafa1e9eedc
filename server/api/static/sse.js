// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, and the API key
// must never travel in a URL. This reads the response body as a stream and parses the SSE format
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

/** Parses an SSE text stream fed in chunks; calls onEvent({event, data, id}) per dispatched event. */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.eventName = "";
    this.data = [];
    this.id = "";
  }

  /** Feeds one decoded chunk; complete lines are interpreted, a partial last line is kept. */
  push(chunk) {
    this.buffer += chunk;
    // A trailing "\r" may be the first half of "\r\n": wait for the next chunk to decide.
    const keepCR = this.buffer.endsWith("\r");
    const text = keepCR ? this.buffer.slice(0, -1) : this.buffer;
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + (keepCR ? "\r" : "");
    for (const line of lines) this.line(line);
  }

  /** The stream ended: a pending "\r" was a line end after all (a lone CR ends a line too). */
  finish() {
    if (!this.buffer.endsWith("\r")) return;
    const line = this.buffer.slice(0, -1); // push() leaves no line end before the last character
    this.buffer = "";
    this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent({ event: this.eventName || "message", data: this.data.join("\n"), id: this.id });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment (the server's keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventName = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}

/**
 * Opens `url` with `headers` and calls onEvent per event until the stream ends or `signal` aborts.
 * Resolves when the server closes the stream; rejects with the response when it is not 2xx.
 */
export async function readEventStream(url, headers, onEvent, signal) {
  const response = await fetch(url, { headers: { Accept: "text/event-stream", ...headers }, signal, cache: "no-store" });
  if (!response.ok) throw response;
  const parser = new SSEParser(onEvent);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return void parser.finish();
    parser.push(value);
  }
}
