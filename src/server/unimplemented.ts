import { Status, ServerError } from "nice-grpc-common";

/** The shape of a ts-proto generic service definition that this helper needs. */
interface ServiceDefinitionLike {
  fullName: string;
  methods: Record<string, { name: string; responseStream: boolean }>;
}

type Handler = (request: unknown, context: unknown) => unknown;

/**
 * A full service implementation whose methods call, per request, the handler of the same name
 * in `current()`. RPCs without a handler answer UNIMPLEMENTED naming the RPC: issues implement
 * RPCs one group at a time, and this keeps the rest honest.
 */
export function delegating<Impl extends object>(
  definition: ServiceDefinitionLike,
  current: () => Partial<Impl> | undefined,
): Impl {
  const impl: Record<string, unknown> = {};
  for (const [key, method] of Object.entries(definition.methods)) {
    const message = `${definition.fullName}/${method.name} is not implemented yet`;
    const find = (): Handler => {
      const handler = (current() as Record<string, Handler> | undefined)?.[key];
      if (!handler) throw new ServerError(Status.UNIMPLEMENTED, message);
      return handler;
    };
    impl[key] = method.responseStream
      ? async function* (request: unknown, context: unknown) {
          yield* find()(request, context) as AsyncIterable<unknown>;
        }
      : async (request: unknown, context: unknown) => find()(request, context);
  }
  return impl as Impl;
}
