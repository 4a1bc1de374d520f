import busboy from "busboy";
import { DomainError, invalidArgument } from "../errors.js";

/** The parts of a `multipart/form-data` body: text fields and files, in order. */
export interface FormParts {
  fields: { name: string; value: string }[];
  files: { name: string; filename: string; mimeType: string; data: Buffer }[];
}

/** Limits of a form beyond the body's own size. */
export interface FormLimits {
  /** Most file parts; more is an INVALID_ARGUMENT naming `filesField`. */
  maxFiles?: number;
  /** Field name to blame for too many files. */
  filesField?: string;
  /** Largest text field, in bytes. */
  maxFieldBytes?: number;
}

/**
 * Splits a `multipart/form-data` body (already read, so the bridge's body limit applies) into
 * its fields and files. A part with a filename is a file; every other part is a text field.
 * Every failure of the parser or of a part's stream (a body cut short, a bad header) settles
 * the promise as INVALID_ARGUMENT: none may reach the process as an unhandled `error` event.
 */
export function parseMultipart(body: Buffer, contentType: string, limits: FormLimits = {}): Promise<FormParts> {
  return new Promise((resolve, reject) => {
    const parts: FormParts = { fields: [], files: [] };
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      reject(error instanceof DomainError ? error : malformed(error));
    };
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: { "content-type": contentType },
        defParamCharset: "utf8",
        limits: {
          fieldSize: limits.maxFieldBytes ?? body.length + 1,
          fileSize: body.length + 1,
          fieldNameSize: 1000,
          ...(limits.maxFiles !== undefined ? { files: limits.maxFiles } : {}),
        },
      });
    } catch (err) {
      fail(err);
      return;
    }
    // The form is complete once the parser has closed and every file stream has ended.
    let open = 1;
    const settle = () => {
      if (--open === 0 && !settled) {
        settled = true;
        resolve(parts);
      }
    };
    parser.on("field", (name, value, info) => {
      if (info.valueTruncated) fail(invalidArgument({ field: name, description: `is longer than ${limits.maxFieldBytes} bytes` }));
      else parts.fields.push({ name, value });
    });
    parser.on("file", (name, stream, info) => {
      open++;
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", fail);
      stream.on("end", () => {
        parts.files.push({ name, filename: info.filename ?? "", mimeType: info.mimeType, data: Buffer.concat(chunks) });
        settle();
      });
    });
    parser.on("filesLimit", () =>
      fail(invalidArgument({ field: limits.filesField ?? "files", description: `at most ${limits.maxFiles} files per request` })),
    );
    parser.on("error", fail);
    parser.on("close", settle);
    parser.end(body);
  });
}

function malformed(err: unknown): DomainError {
  return new DomainError("INVALID_ARGUMENT", `malformed multipart/form-data body: ${(err as Error).message}`);
}
