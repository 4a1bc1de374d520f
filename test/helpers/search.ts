import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { AppDeps } from "../../src/app.js";
import type { Options } from "../../src/config/options.js";
import { writeClipTestModel } from "../fixtures/clip-test-model.js";
import { startTestApp, type TestApp } from "./app.js";

/**
 * A test app searching with the self-built test model (images embed as their mean colour,
 * colour words map to the same directions), started and caught up; `close` also removes the
 * model's directory.
 */
export async function startSearchTestApp(overrides: Partial<Options> = {}, deps: AppDeps = {}): Promise<TestApp & { modelDir: string }> {
  const modelDir = await mkdtemp(path.join(tmpdir(), "glimpse-test-model-"));
  await writeClipTestModel(modelDir);
  const t = await startTestApp({ model: modelDir, ...overrides }, deps);
  await t.app.searchReady;
  return {
    ...t,
    modelDir,
    async close() {
      await t.close();
      await rm(modelDir, { recursive: true, force: true });
    },
  };
}
