import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The web gallery: built into web/dist, which the HTTP bridge serves at `/`.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  logLevel: "warn",
  build: { outDir: "dist", emptyOutDir: true, assetsDir: "assets", sourcemap: true, target: "es2022" },
});
