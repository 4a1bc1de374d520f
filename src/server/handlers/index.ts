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
import { withUnimplemented } from "../unimplemented.js";

/** Handlers that replace the defaults, per service; tests use them to inject slow calls. */
export interface HandlerOverrides {
  image?: Partial<ImageServiceImplementation<AppCallContext>>;
  generation?: Partial<GenerationServiceImplementation<AppCallContext>>;
  account?: Partial<AccountServiceImplementation<AppCallContext>>;
}

/**
 * The three glimpse services as the gRPC server registers them. RPCs without a handler yet
 * answer UNIMPLEMENTED.
 */
export function serviceRegistrations(overrides: HandlerOverrides): ServiceRegistration[] {
  const image = withUnimplemented<ImageServiceImplementation<AppCallContext>>(ImageServiceDefinition, {
    ...overrides.image,
  });
  const generation = withUnimplemented<GenerationServiceImplementation<AppCallContext>>(
    GenerationServiceDefinition,
    { ...overrides.generation },
  );
  const account = withUnimplemented<AccountServiceImplementation<AppCallContext>>(AccountServiceDefinition, {
    ...overrides.account,
  });
  return [
    { fullName: ImageServiceDefinition.fullName, register: (s) => s.add(ImageServiceDefinition, image) },
    { fullName: GenerationServiceDefinition.fullName, register: (s) => s.add(GenerationServiceDefinition, generation) },
    { fullName: AccountServiceDefinition.fullName, register: (s) => s.add(AccountServiceDefinition, account) },
  ];
}
