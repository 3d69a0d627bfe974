// `node --import=./src/ts-loader.mjs src/main.ts` (what npm start runs). Node 24 runs
// the TypeScript sources itself (type stripping: tsconfig's erasableSyntaxOnly keeps
// them strippable), so this does nothing there and nothing is transpiled at start.
// Node 20 cannot: it registers tsx's loader, the one place production still needs tsx.
if (!process.features.typescript) {
  const { register } = await import('tsx/esm/api');
  register();
}
