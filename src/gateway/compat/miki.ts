import type { RouteDeps } from "../gateway.js";
import type { Route } from "../http.js";

export function mikiRoutes(_deps: RouteDeps): Route[] {
  return [];
}
