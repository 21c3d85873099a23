import { defineConfig } from "vitest/config";

// The edge-runtime environment is closest to Convex's own runtime; convex-test is inlined
// so vitest tracks the modules it loads (the convex-test docs' recommended setup).
export default defineConfig({
  test: {
    environment: "edge-runtime",
    server: { deps: { inline: ["convex-test"] } },
  },
});
