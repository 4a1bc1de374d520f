import {
  AccountServiceDefinition,
  type AccountServiceImplementation,
} from "../../gen/glimpse/account/v1/account_service.js";
import {
  GenerationServiceDefinition,
  type GenerationServiceImplementation,
} from "../../gen/glimpse/generation/v1/generation_service.js";
import { ImageServiceDefinition, type ImageServiceImplementation } from "../../gen/glimpse/image/v1/image_service.js";
import type { AppCallContext } from "../context.js";
import type { ServiceRegistration } from "../grpc-server.js";
import { delegating } from "../unimplemented.js";

type Ctx = AppCallContext;

/** The RPC handlers of the three services; a missing handler answers UNIMPLEMENTED. */
export interface HandlerSet {
  image?: Partial<ImageServiceImplementation<Ctx>>;
  generation?: Partial<GenerationServiceImplementation<Ctx>>;
  account?: Partial<AccountServiceImplementation<Ctx>>;
}

/**
 * The three glimpse services as the gRPC server registers them. The server listens before the
 * store is ready, so handlers are looked up per call from `current()`, which the composition
 * root fills in once the services exist (calls before that are refused as "starting").
 */
export function serviceRegistrations(current: () => HandlerSet): ServiceRegistration[] {
  const image = delegating<ImageServiceImplementation<Ctx>>(ImageServiceDefinition, () => current().image);
  const generation = delegating<GenerationServiceImplementation<Ctx>>(
    GenerationServiceDefinition,
    () => current().generation,
  );
  const account = delegating<AccountServiceImplementation<Ctx>>(AccountServiceDefinition, () => current().account);
  return [
    { fullName: ImageServiceDefinition.fullName, register: (s) => s.add(ImageServiceDefinition, image) },
    { fullName: GenerationServiceDefinition.fullName, register: (s) => s.add(GenerationServiceDefinition, generation) },
    { fullName: AccountServiceDefinition.fullName, register: (s) => s.add(AccountServiceDefinition, account) },
  ];
}
