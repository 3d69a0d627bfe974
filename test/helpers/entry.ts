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

/**
 * The environment for such a child: `env` with the child's coverage turned off. tap's
 * processinfo (which wraps spawn in a test process) records a child's coverage unless
 * `_TAPJS_PROCESSINFO_COVERAGE_` is '0'. On Node 20 the child compiles the sources with
 * tsx while the test processes use ts-node, and the report merges coverage by file name
 * under one source map, so a child's counts were read against the other compiler's map (a
 * file's line coverage swung by 10 points between runs, and once shrank to one line).
 * The layers' coverage is the tests' own.
 */
export function childEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_V8_COVERAGE: _, ...rest } = env;
  return { ...rest, _TAPJS_PROCESSINFO_COVERAGE_: '0' };
}
