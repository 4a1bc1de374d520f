import type { RouteDeps } from "./gateway.js";
import type { Route } from "./http.js";

export function openapiRoutes(_deps: RouteDeps): Route[] {
  return [];
}
