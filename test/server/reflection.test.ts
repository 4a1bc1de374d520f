import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/app.js";

// The reflection messages (the same fields in v1 and v1alpha), enough of them to ask for the
// service list and for the file defining a symbol, as grpcurl does.
const root = protobuf.Root.fromJSON({
  nested: {
    reflection: {
      nested: {
        ServerReflectionRequest: {
          oneofs: { messageRequest: { oneof: ["fileContainingSymbol", "listServices"] } },
          fields: {
            host: { type: "string", id: 1 },
            fileContainingSymbol: { type: "string", id: 4 },
            listServices: { type: "string", id: 7 },
          },
        },
        ServerReflectionResponse: {
          fields: {
            validHost: { type: "string", id: 1 },
            fileDescriptorResponse: { type: "FileDescriptorResponse", id: 4 },
            listServicesResponse: { type: "ListServiceResponse", id: 6 },
            errorResponse: { type: "ErrorResponse", id: 7 },
          },
        },
        FileDescriptorResponse: { fields: { fileDescriptorProto: { rule: "repeated", type: "bytes", id: 1 } } },
        ListServiceResponse: { fields: { service: { rule: "repeated", type: "ServiceResponse", id: 1 } } },
        ServiceResponse: { fields: { name: { type: "string", id: 1 } } },
        ErrorResponse: { fields: { errorCode: { type: "int32", id: 1 }, errorMessage: { type: "string", id: 2 } } },
      },
    },
  },
});
const Request = root.lookupType("reflection.ServerReflectionRequest");
const Response = root.lookupType("reflection.ServerReflectionResponse");

interface ReflectionAnswer {
  validHost?: string;
  fileDescriptorResponse?: { fileDescriptorProto: Uint8Array[] };
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

/** One request and its answer over a plain grpc-js bidi stream, without a key. */
function ask(address: string, version: "v1" | "v1alpha", request: object): Promise<ReflectionAnswer> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = client.makeBidiStreamRequest(
    `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
    (req: object) => Buffer.from(Request.encode(Request.fromObject(req)).finish()),
    (bytes: Buffer) => Response.toObject(Response.decode(bytes), { defaults: false }) as ReflectionAnswer,
  );
  return new Promise<ReflectionAnswer>((resolve, reject) => {
    call.on("data", (answer: ReflectionAnswer) => {
      resolve(answer);
      call.end();
    });
    call.on("error", reject);
    call.write(request);
  }).finally(() => client.close());
}

describe("server reflection", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  for (const version of ["v1", "v1alpha"] as const) {
    it(`lists the services over ${version}, without a key`, async () => {
      const answer = await ask(t.address, version, { listServices: "" });
      const names = answer.listServicesResponse!.service.map((s) => s.name);
      expect(names).toEqual(
        expect.arrayContaining([
          "glimpse.image.v1.ImageService",
          "glimpse.generation.v1.GenerationService",
          "glimpse.account.v1.AccountService",
          "grpc.health.v1.Health",
        ]),
      );
    });

    it(`answers the file defining a service over ${version}, as grpcurl asks`, async () => {
      const answer = await ask(t.address, version, { fileContainingSymbol: "glimpse.image.v1.ImageService" });
      expect(answer.errorResponse).toBeUndefined();
      const files = answer.fileDescriptorResponse!.fileDescriptorProto;
      expect(files.length).toBeGreaterThan(0);
      expect(Buffer.from(files[0]).toString("latin1")).toContain("glimpse/image/v1/image_service.proto");
    });
  }
});
