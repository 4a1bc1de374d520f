import busboy from "busboy";
import { DomainError } from "../errors.js";

/** The parts of a `multipart/form-data` body: text fields and files, in order. */
export interface FormParts {
  fields: { name: string; value: string }[];
  files: { name: string; filename: string; mimeType: string; data: Buffer }[];
}

/**
 * Splits a `multipart/form-data` body (already read, so the bridge's body limit applies) into
 * its fields and files. A part with a filename is a file; every other part is a text field.
 */
export function parseMultipart(body: Buffer, contentType: string): Promise<FormParts> {
  return new Promise((resolve, reject) => {
    const parts: FormParts = { fields: [], files: [] };
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: { "content-type": contentType },
        defParamCharset: "utf8",
        limits: { fieldSize: body.length + 1, fileSize: body.length + 1, fieldNameSize: 1000 },
      });
    } catch (err) {
      reject(malformed(err));
      return;
    }
    parser.on("field", (name, value) => parts.fields.push({ name, value }));
    parser.on("file", (name, stream, info) => {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () =>
        parts.files.push({ name, filename: info.filename ?? "", mimeType: info.mimeType, data: Buffer.concat(chunks) }),
      );
    });
    parser.on("error", (err) => reject(malformed(err)));
    parser.on("close", () => resolve(parts));
    parser.end(body);
  });
}

function malformed(err: unknown): DomainError {
  return new DomainError("INVALID_ARGUMENT", `malformed multipart/form-data body: ${(err as Error).message}`);
}
