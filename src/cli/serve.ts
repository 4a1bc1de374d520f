import type { AppDeps } from "../app.js";
import type { Options } from "../config/options.js";

/**
 * Runs glimpse until SIGTERM or SIGINT, then stops it gracefully and exits 0 (1 if the stop
 * failed). A second signal exits at once.
 */
export async function serveUntilSignalled(options: Options, deps: AppDeps = {}): Promise<void> {
  // Loaded only once options are valid, so a bad value fails before anything else starts.
  const { startApp } = await import("../app.js");
  const app = await startApp(options, deps);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      app.logger.warn("second signal: exiting without waiting", { signal });
      process.exit(1);
    }
    app.logger.info("signal received", { signal });
    app.stop().then(
      () => process.exit(0),
      (error) => {
        app.logger.error("shutdown failed", { error });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
