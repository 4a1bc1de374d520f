import type { RouteDeps } from "../gateway.js";
import type { Route } from "../http.js";

export function civitaiRoutes(_deps: RouteDeps): Route[] {
  return [];
}
