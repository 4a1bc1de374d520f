import type { Server } from "nice-grpc";
import { ServerReflection, ServerReflectionService } from "nice-grpc-server-reflection";

/**
 * `grpc.reflection.v1alpha.ServerReflection`: the messages of v1 under the package's older
 * name (v1 was v1alpha renamed, field for field), which grpcurl and older clients still ask for.
 * One implementation answers both.
 */
const ServerReflectionV1AlphaService = {
  serverReflectionInfo: {
    ...ServerReflectionService.serverReflectionInfo,
    path: "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
  },
} as unknown as typeof ServerReflectionService; // the same shape; only the path's literal type differs

/**
 * Adds server reflection, v1 and v1alpha, over the contract's descriptor set, listing
 * `serviceNames`.
 */
export function addReflection(server: Server, descriptorSet: Uint8Array, serviceNames: string[]): void {
  const reflection = ServerReflection(Buffer.from(descriptorSet), serviceNames);
  server.add(ServerReflectionService, reflection);
  server.add(ServerReflectionV1AlphaService, reflection);
}
