// Entry of the embedding worker threads. The sources are TypeScript run through tsx, and a
// worker thread does not inherit the loader hooks of the thread that started it (neither from
// `node --import tsx` nor from tsx's register() as bin/glimpse.js uses it, nor under vitest),
// so the worker registers tsx itself before it loads the real entry.
import { register } from "tsx/esm/api";

register();
await import("./runtime-worker.ts");
