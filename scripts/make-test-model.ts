// Writes the tiny CLIP-shaped test model (test/fixtures/clip-test-model.ts) into a directory,
// for trying the embedding layer by hand without real weights:
//   node --import tsx scripts/make-test-model.ts <dir> [--plain] [--dimension N]
import { writeClipTestModel } from "../test/fixtures/clip-test-model.js";

const USAGE = "usage: node --import tsx scripts/make-test-model.ts <dir> [--plain] [--dimension N]";

function parse(argv: string[]): { dir: string; plain: boolean; dimension?: number } {
  let dir: string | undefined;
  let plain = false;
  let dimension: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--plain") plain = true;
    else if (arg === "--dimension") dimension = Number(argv[++i]);
    else if (arg.startsWith("--dimension=")) dimension = Number(arg.slice("--dimension=".length));
    else if (arg.startsWith("-") || dir !== undefined) throw new Error(`unexpected argument ${arg}`);
    else dir = arg;
  }
  if (dir === undefined) throw new Error("missing the output directory");
  return { dir, plain, dimension };
}

try {
  const { dir, plain, dimension } = parse(process.argv.slice(2));
  await writeClipTestModel(dir, { plain, dimension });
  console.log(`wrote ${plain ? "plain " : ""}CLIP test model to ${dir}`);
} catch (error) {
  console.error(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
  process.exitCode = 2;
}
