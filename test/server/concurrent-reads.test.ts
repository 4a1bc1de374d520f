import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, withKey, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

/*
 * GetImage calls that arrive together are read from the database together (see ImageReads in
 * images-repository.ts): each caller must still get exactly its own answer.
 */
describe("GetImage calls arriving together", () => {
  let t: TestApp;
  let owner: string;
  let other: string;
  let privateId: string;
  let publicId: string;

  beforeAll(async () => {
    t = await startTestApp();
    owner = (await t.newAccount({ username: "owner" })).key;
    other = (await t.newAccount({ username: "other" })).key;
    const client = t.client(ImageServiceDefinition);
    privateId = (await client.uploadImage({ content: await distinctPng(3101), index: false }, withKey(owner))).image!.id;
    publicId = (
      await client.uploadImage(
        { content: await distinctPng(3102), visibility: Visibility.VISIBILITY_PUBLIC, index: false },
        withKey(owner),
      )
    ).image!.id;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answer each caller as it may read, whatever else is asked at the same time", async () => {
    const client = t.client(ImageServiceDefinition);
    const outcome = (id: string, key?: string) =>
      client.getImage({ id }, key === undefined ? undefined : withKey(key)).then(
        (r) => r.image!.id,
        (e: { code: Status }) => Status[e.code],
      );
    // Calls without a key act as the test app's admin.
    const asked = Array.from({ length: 5 }, () => [
      outcome(privateId, owner),
      outcome(privateId, other),
      outcome(publicId, other),
      outcome(privateId),
      outcome("999999999", owner),
    ]).flat();
    expect(await Promise.all(asked)).toEqual(
      Array.from({ length: 5 }, () => [privateId, "NOT_FOUND", publicId, privateId, "NOT_FOUND"]).flat(),
    );
  });

  it("fail only the call whose id the database refuses", async () => {
    const client = t.client(ImageServiceDefinition);
    const [tooLarge, ...others] = await Promise.allSettled([
      client.getImage({ id: (2n ** 63n).toString() }, withKey(owner)),
      client.getImage({ id: privateId }, withKey(owner)),
      client.getImage({ id: publicId }, withKey(other)),
    ]);
    expect(tooLarge.status).toBe("rejected");
    expect(others.map((o) => (o.status === "fulfilled" ? o.value.image!.id : o.reason))).toEqual([privateId, publicId]);
  });

  it("see a change made just before", async () => {
    const client = t.client(ImageServiceDefinition);
    const { image } = await client.getImage({ id: publicId }, withKey(owner));
    await client.updateImage({ image: { ...image!, tags: ["changed"] }, updateMask: ["tags"] }, withKey(owner));
    const seen = await Promise.all([
      client.getImage({ id: publicId }, withKey(other)),
      client.getImage({ id: publicId }, withKey(owner)),
    ]);
    expect(seen.map((s) => s.image!.tags)).toEqual([["changed"], ["changed"]]);
  });
});
