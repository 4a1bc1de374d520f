import { ROOT_CONTEXT, SpanKind, trace } from "@opentelemetry/api";
import type { Sql } from "../store/db.js";
import { activeSpan, endWithError } from "./call-scope.js";

/** A postgres.js query as far as tracing needs it: a lazy promise with its text once built. */
type Query = Promise<unknown> & { string?: string; strings?: readonly string[] };

/**
 * The pool as a decorator that gives every query run inside a traced call a span of its own
 * (under the call's or the stage's span), named after the statement's first word and
 * carrying its text with `$n` placeholders, never its parameters. Transactions (`begin`,
 * `savepoint`) hand out decorated handles too. Used only when tracing is on: otherwise the
 * repositories get the pool itself.
 */
export function tracedSql(sql: Sql): Sql {
  return new Proxy(sql, {
    apply(target, self, args) {
      const result: unknown = Reflect.apply(target, self, args);
      return result instanceof Promise ? traceQuery(result as Query) : result;
    },
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (property === "unsafe" && typeof value === "function") {
        return (...args: unknown[]) => traceQuery(Reflect.apply(value, target, args) as Query);
      }
      if ((property === "begin" || property === "savepoint") && typeof value === "function") {
        return (...args: unknown[]) => {
          const at = args.findIndex((a) => typeof a === "function");
          if (at >= 0) {
            const body = args[at] as (tx: Sql) => unknown;
            args[at] = (tx: Sql) => body(tracedSql(tx));
          }
          return Reflect.apply(value, target, args);
        };
      }
      return value;
    },
  });
}

/**
 * Starts a span when the query is first awaited (postgres.js runs a query then, and a
 * fragment nested in another query is never awaited), ending it when the query settles.
 */
function traceQuery(query: Query): Query {
  const then = query.then;
  let traced = false;
  query.then = function (this: Query, onFulfilled, onRejected) {
    if (!traced) {
      traced = true;
      const active = activeSpan();
      if (active !== undefined) {
        const span = active.tracer.startSpan(
          "postgres",
          { kind: SpanKind.CLIENT, attributes: { "db.system.name": "postgresql" } },
          trace.setSpan(ROOT_CONTEXT, active.span),
        );
        const finish = (error?: unknown) => {
          const text = (query.string ?? query.strings?.join("?") ?? "").trim();
          const operation = /^\w+/.exec(text)?.[0]?.toUpperCase() ?? "QUERY";
          span.updateName(`postgres ${operation}`);
          span.setAttribute("db.operation.name", operation);
          span.setAttribute("db.query.text", text.length > 2000 ? `${text.slice(0, 2000)}…` : text);
          if (error !== undefined) endWithError(span, error);
          span.end();
        };
        then.call(
          query,
          () => finish(),
          (error: unknown) => finish(error),
        );
      }
    }
    return then.call(this, onFulfilled, onRejected) as never;
  } as Query["then"];
  return query;
}
