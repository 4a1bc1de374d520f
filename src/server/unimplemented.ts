import { Status, ServerError } from "nice-grpc-common";

/** The shape of a ts-proto generic service definition that this helper needs. */
interface ServiceDefinitionLike {
  fullName: string;
  methods: Record<string, { name: string; responseStream: boolean }>;
}

/**
 * Completes a partial service implementation: every method it lacks answers UNIMPLEMENTED
 * naming the RPC. Issues implement RPCs one group at a time; this keeps the rest honest.
 */
export function withUnimplemented<Impl extends object>(definition: ServiceDefinitionLike, partial: Partial<Impl>): Impl {
  const impl: Record<string, unknown> = { ...partial };
  for (const [key, method] of Object.entries(definition.methods)) {
    if (impl[key] !== undefined) continue;
    const message = `${definition.fullName}/${method.name} is not implemented yet`;
    impl[key] = method.responseStream
      ? async function* () {
          throw new ServerError(Status.UNIMPLEMENTED, message);
        }
      : async () => {
          throw new ServerError(Status.UNIMPLEMENTED, message);
        };
  }
  return impl as Impl;
}
