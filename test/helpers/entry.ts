/**
 * How a test starts one of the app's entry points (src/main.ts, src/worker.ts,
 * src/cli.ts) as its own process, the way production does on this Node: Node 24
 * strips the types itself, so it is the image's plain `node src/main.ts`; Node 20
 * cannot, so it is npm start's `node --import=./src/ts-loader.mjs src/main.ts`
 * (tsx's loader). The CI runs the suite on both, so both command lines are tried.
 * Paths are relative to the repository: spawn with `cwd` at its root.
 */
export function entryArgs(entry: string): string[] {
  return process.features.typescript ? [entry] : ['--import=./src/ts-loader.mjs', entry];
}
