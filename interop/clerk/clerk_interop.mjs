// Runs Clerk's official SDK, @clerk/backend, against a keygate admin API.
//
//   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_ADMIN_TOKEN=… node clerk_interop.mjs
//
// interop_test.go starts a real server and runs this script; it exits 0 only
// when every check passed. Node's built-in assert, no test framework.
import assert from 'node:assert/strict';
import { createClerkClient } from '@clerk/backend';
import { ClerkAPIResponseError, isClerkAPIResponseError } from '@clerk/backend/errors';

const apiUrl = process.env.KEYGATE_URL;
const secretKey = process.env.KEYGATE_ADMIN_TOKEN;
assert.ok(apiUrl && secretKey, 'set KEYGATE_URL and KEYGATE_ADMIN_TOKEN');

const clerk = createClerkClient({ secretKey, apiUrl });
const subject = 'user_interop';
let checks = 0;

async function step(name, fn) {
  try {
    await fn();
  } catch (err) {
    console.error(`FAIL ${name}`);
    throw err;
  }
  checks++;
  console.log(`ok ${name}`);
}

// expectAPIError asserts that fn throws the SDK's ClerkAPIResponseError
// with the given status and code, and returns it.
async function expectAPIError(fn, status, code) {
  let caught;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `expected a ClerkAPIResponseError ${status} ${code}, got success`);
  assert.ok(caught instanceof ClerkAPIResponseError, `expected ClerkAPIResponseError, got ${caught?.name}: ${caught?.message}`);
  assert.ok(isClerkAPIResponseError(caught));
  assert.equal(caught.status, status);
  assert.equal(caught.errors[0].code, code);
  assert.equal(typeof caught.errors[0].longMessage, 'string');
  assert.equal(typeof caught.clerkTraceId, 'string');
  assert.ok(caught.clerkTraceId.length > 0, 'clerk_trace_id must reach the SDK');
  return caught;
}

async function authenticate(secret) {
  const request = new Request('http://app.example/reports', {
    headers: { authorization: `Bearer ${secret}` },
  });
  return clerk.authenticateRequest(request, { acceptsToken: 'api_key' });
}

let key;
await step('create with scopes, claims and expiry', async () => {
  key = await clerk.apiKeys.create({
    name: 'interop',
    subject,
    description: 'made by @clerk/backend',
    claims: { team: 'infra', nested: { fooBar: 1 } },
    scopes: ['reports:read', 'reports:write'],
    createdBy: 'user_admin',
    secondsUntilExpiration: 3600,
  });
  assert.equal(typeof key.secret, 'string');
  assert.match(key.secret, /^ak_[A-Za-z0-9_]+$/);
  assert.match(key.id, /^ak_[0-9a-f]{32}$/);
  assert.equal(key.type, 'api_key');
  assert.equal(key.name, 'interop');
  assert.equal(key.subject, subject);
  assert.equal(key.description, 'made by @clerk/backend');
  assert.deepEqual(key.claims, { team: 'infra', nested: { fooBar: 1 } });
  assert.deepEqual(key.scopes, ['reports:read', 'reports:write']);
  assert.equal(key.createdBy, 'user_admin');
  assert.equal(key.expiration, key.createdAt + 3600 * 1000);
  assert.equal(key.expired, false);
  assert.equal(key.revoked, false);
  assert.equal(key.revocationReason, null);
  assert.equal(key.lastUsedAt, null);
});

await step('create refused: form_param_missing reaches the SDK with its param', async () => {
  const err = await expectAPIError(() => clerk.apiKeys.create({ subject }), 400, 'form_param_missing');
  assert.equal(err.errors[0].meta.paramName, 'name');
});

const ids = [key.id];
await step('list with paging and total_count', async () => {
  for (let i = 1; i <= 4; i++) {
    ids.push((await clerk.apiKeys.create({ name: `extra ${i}`, subject })).id);
  }
  await clerk.apiKeys.create({ name: 'someone else', subject: 'user_other' });

  const all = await clerk.apiKeys.list({ subject, limit: 10 });
  assert.equal(all.totalCount, 5);
  assert.equal(all.data.length, 5);
  assert.deepEqual(new Set(all.data.map((k) => k.id)), new Set(ids));
  for (let i = 1; i < all.data.length; i++) {
    assert.ok(all.data[i - 1].createdAt >= all.data[i].createdAt, 'newest first');
  }
  assert.ok(all.data.every((k) => k.secret === undefined), 'a listing carries no secret');

  const seen = [];
  for (const offset of [0, 2, 4]) {
    const page = await clerk.apiKeys.list({ subject, limit: 2, offset });
    assert.equal(page.totalCount, 5, 'total_count counts every match, not the page');
    assert.equal(page.data.length, offset === 4 ? 1 : 2);
    seen.push(...page.data.map((k) => k.id));
  }
  assert.deepEqual(seen, all.data.map((k) => k.id), 'pages in order, without overlap');

  const everyone = await clerk.apiKeys.list({});
  assert.equal(everyone.totalCount, 6);
});

await step('get', async () => {
  const got = await clerk.apiKeys.get(key.id);
  assert.equal(got.id, key.id);
  assert.equal(got.name, 'interop');
  assert.deepEqual(got.scopes, key.scopes);
  assert.equal(got.secret, undefined);
  await expectAPIError(() => clerk.apiKeys.get(`ak_${'0'.repeat(32)}`), 404, 'resource_not_found');
});

await step('get through a /v1 base URL', async () => {
  const v1 = createClerkClient({ secretKey, apiUrl: `${apiUrl}/v1` });
  assert.equal((await v1.apiKeys.get(key.id)).id, key.id);
});

await step('getSecret is refused: secrets are shown once', async () => {
  await expectAPIError(() => clerk.apiKeys.getSecret(key.id), 404, 'api_key_secret_unavailable');
});

await step('update', async () => {
  const updated = await clerk.apiKeys.update({
    apiKeyId: key.id,
    subject,
    description: 'updated by @clerk/backend',
    scopes: ['reports:read'],
    claims: { team: 'platform' },
    secondsUntilExpiration: 7200,
  });
  assert.equal(updated.description, 'updated by @clerk/backend');
  assert.deepEqual(updated.scopes, ['reports:read']);
  assert.deepEqual(updated.claims, { team: 'platform' });
  assert.ok(updated.expiration > key.expiration);
  assert.ok(updated.updatedAt >= key.updatedAt);

  const cleared = await clerk.apiKeys.update({ apiKeyId: key.id, description: null, secondsUntilExpiration: null });
  assert.equal(cleared.description, null);
  assert.equal(cleared.expiration, null);
  assert.deepEqual(cleared.claims, { team: 'platform' }, 'an absent field is kept');

  await expectAPIError(() => clerk.apiKeys.update({ apiKeyId: key.id, subject: 'user_other' }), 400, 'form_param_invalid');
});

await step('verify', async () => {
  const verified = await clerk.apiKeys.verify(key.secret);
  assert.equal(verified.id, key.id);
  assert.equal(verified.subject, subject);
  assert.deepEqual(verified.scopes, ['reports:read']);
  assert.equal(typeof verified.lastUsedAt, 'number');
  assert.equal(verified.secret, undefined);
  await expectAPIError(() => clerk.apiKeys.verify('ak_not_a_real_key'), 404, 'api_key_invalid');
});

await step('authenticateRequest accepts a live key', async () => {
  const state = await authenticate(key.secret);
  assert.equal(state.isAuthenticated, true, `reason: ${state.reason} ${state.message}`);
  assert.equal(state.tokenType, 'api_key');
  const auth = state.toAuth();
  assert.equal(auth.id, key.id);
  assert.equal(auth.subject, subject);
  assert.equal(auth.userId, subject);
  assert.equal(auth.name, 'interop');
  assert.deepEqual(auth.scopes, ['reports:read']);
  assert.deepEqual(auth.claims, { team: 'platform' });
});

await step('revoke', async () => {
  const revoked = await clerk.apiKeys.revoke({ apiKeyId: key.id, revocationReason: 'interop done' });
  assert.equal(revoked.revoked, true);
  assert.equal(revoked.revocationReason, 'interop done');
  const again = await clerk.apiKeys.revoke({ apiKeyId: key.id, revocationReason: 'second' });
  assert.equal(again.revocationReason, 'interop done', 'revoking twice keeps the first reason');
  const noReason = await clerk.apiKeys.revoke({ apiKeyId: ids[1] });
  assert.equal(noReason.revoked, true);
  assert.equal(noReason.revocationReason, null);
});

await step('verify a revoked key throws ClerkAPIResponseError 404', async () => {
  await expectAPIError(() => clerk.apiKeys.verify(key.secret), 404, 'api_key_revoked');
});

await step('authenticateRequest rejects a revoked key', async () => {
  const state = await authenticate(key.secret);
  assert.equal(state.isAuthenticated, false);
  assert.equal(state.status, 'signed-out');
  assert.equal(state.reason, 'token-invalid');
  assert.equal(state.toAuth().id, null);
});

await step('list hides revoked keys unless include_invalid', async () => {
  assert.equal((await clerk.apiKeys.list({ subject })).totalCount, 3);
  assert.equal((await clerk.apiKeys.list({ subject, includeInvalid: true })).totalCount, 5);
});

await step('delete', async () => {
  const deleted = await clerk.apiKeys.delete(key.id);
  assert.equal(deleted.id, key.id);
  assert.equal(deleted.deleted, true);
  assert.equal(deleted.object, 'api_key');
  await expectAPIError(() => clerk.apiKeys.get(key.id), 404, 'resource_not_found');
  await expectAPIError(() => clerk.apiKeys.verify(key.secret), 404, 'api_key_not_found');
});

await step('a wrong admin token is 401 authentication_invalid', async () => {
  const wrong = createClerkClient({ secretKey: `${secretKey}-wrong`, apiUrl });
  await expectAPIError(() => wrong.apiKeys.list({ subject }), 401, 'authentication_invalid');
  const live = await clerk.apiKeys.create({ name: 'live', subject });
  const request = new Request('http://app.example/', { headers: { authorization: `Bearer ${live.secret}` } });
  const state = await wrong.authenticateRequest(request, { acceptsToken: 'api_key' });
  assert.equal(state.isAuthenticated, false);
});

console.log(`clerk interop: ${checks} checks passed`);
