// How another service calls Accounts through the generated SDK (generated/ts, made by `make clients`).
// `tsc --noEmit -p tests/contract` checks this file against the generated types in strict mode; each
// `@ts-expect-error` below is a misuse the types must reject, so the check fails if they get looser.
import {
  type ApiKeyCreated,
  createApiKey,
  createToken,
  createUser,
  getMe,
  listUsers,
  type Problem,
  register,
  type UserPage,
  type UserRead,
  updateMe,
} from './generated/ts/index.js';
import { type Client, createClient } from './generated/ts/client/index.js';

/** A problem document (RFC 9457) the API answered with, as an exception. */
export class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.title}: ${problem.detail}`);
  }
}

/** The data of a call, or its typed problem thrown. */
function ok<T>(result: { data: T; error: undefined } | { data: undefined; error: Problem }): T {
  if (result.error !== undefined) {
    throw new ProblemError(result.error);
  }
  return result.data;
}

/** A client that sends the access token (a JWT) as `Authorization: Bearer`. */
export function withToken(baseUrl: string, accessToken: string): Client {
  return createClient({ baseUrl, auth: (scheme) => (scheme.type === 'http' ? accessToken : undefined) });
}

/** A client that sends an API key in `X-API-Key`. */
export function withApiKey(baseUrl: string, key: string): Client {
  return createClient({ baseUrl, auth: (scheme) => (scheme.type === 'apiKey' ? key : undefined) });
}

export async function logIn(client: Client, username: string, password: string): Promise<string> {
  const pair = ok(await createToken({ client, body: { grant_type: 'password', username, password } }));
  return pair.access_token;
}

/** Every user, page by page (`limit` and `offset` until `total`), by username; also how many pages it took. */
export async function allUsers(
  client: Client,
  limit: number,
): Promise<{ users: UserRead[]; total: number; pages: number }> {
  const users: UserRead[] = [];
  let page: UserPage;
  let pages = 0;
  do {
    page = ok(await listUsers({ client, query: { limit, offset: users.length, sort: 'username' } }));
    users.push(...page.items);
    pages += 1;
  } while (page.items.length > 0 && users.length < page.total);
  return { users, total: page.total, pages };
}

export interface ScenarioResult {
  registered: UserRead;
  updated: UserRead;
  usernames: string[];
  pages: number;
  total: number;
  apiKey: Pick<ApiKeyCreated, 'id' | 'prefix' | 'scopes'>;
  totalSeenWithKey: number;
  duplicate: Problem;
  duplicateFields: string[];
}

/** Register, log in, read and update `me`, add and page users as an admin, make and use an API key, meet a 409. */
export async function scenario(baseUrl: string, admin: { username: string; password: string }): Promise<ScenarioResult> {
  const anonymous = createClient({ baseUrl });
  const signUp = { email: 'ts-user@example.com', username: 'ts-user', password: 'typescript is typed' };

  const registered: UserRead = ok(await register({ client: anonymous, body: signUp }));
  const me = withToken(baseUrl, await logIn(anonymous, signUp.username, signUp.password));
  const read = ok(await getMe({ client: me }));
  if (read.id !== registered.id) {
    throw new Error(`getMe answered ${read.id}, registered ${registered.id}`);
  }
  const updated = ok(await updateMe({ client: me, body: { full_name: 'Type Script', bio: null } }));

  const root = withToken(baseUrl, await logIn(anonymous, admin.username, admin.password));
  for (const name of ['ts-carol', 'ts-alice', 'ts-bob']) {
    ok(await createUser({ client: root, body: { email: `${name}@example.com`, username: name, password: signUp.password } }));
  }
  const { users, total, pages } = await allUsers(root, 2);

  const created = ok(await createApiKey({ client: root, body: { name: 'ts-reporting', scopes: ['users:read'] } }));
  const totalSeenWithKey = ok(await listUsers({ client: withApiKey(baseUrl, created.key) })).total;

  // A typed error: the e-mail is taken, so `error` is the Problem of the 409 and `data` is undefined.
  const again = await register({ client: anonymous, body: { ...signUp, username: 'ts-other' } });
  if (again.error === undefined) {
    throw new Error(`registering twice answered ${again.response.status}`);
  }
  const duplicate: Problem = again.error;

  return {
    registered,
    updated,
    usernames: users.map((user) => user.username),
    pages,
    total,
    apiKey: { id: created.id, prefix: created.prefix, scopes: created.scopes },
    totalSeenWithKey,
    duplicate,
    duplicateFields: (duplicate.errors ?? []).map((error) => error.field),
  };
}

// Misuses the generated types must reject (checked by tsc, never run).
export async function misuses(client: Client): Promise<void> {
  // @ts-expect-error `limit` is a number
  await listUsers({ client, query: { limit: '10' } });
  // @ts-expect-error `sort` is one of the documented fields
  await listUsers({ client, query: { sort: 'password' } });
  // @ts-expect-error scopes are `users:read` or `users:write`
  await createApiKey({ client, body: { name: 'k', scopes: ['admin'] } });
  // @ts-expect-error `password` is required to register
  await register({ client, body: { email: 'a@example.com', username: 'a' } });
  // @ts-expect-error every token request names its grant
  await createToken({ client, body: { username: 'a', password: 'b' } });
  const result = await getMe({ client });
  // @ts-expect-error `data` is undefined until the error is ruled out
  result.data.id;
  if (result.error) {
    const status: number = result.error.status;
    // @ts-expect-error a Problem has no `id`
    result.error.id;
    void status;
  }
}
