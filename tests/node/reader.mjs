// A configsync reader in another language, written from README.md's "The Redis contract" and
// nothing else (tests/test_contract.py runs it against a namespace the daemon wrote).
//
//   node reader.mjs REDIS_URL NAMESPACE            check the namespace, print one JSON line
//   node reader.mjs REDIS_URL NAMESPACE --follow   first follow the change channel as the
//       README says a reader must (prints "ready" once subscribed and loaded, then "decided
//       {...}" once each event is handled), until stdin closes; then check, and compare what
//       it followed with what Redis holds
//
// The JSON (the last line): {contract, state, problems, checksums, read, events, follower}.
// `problems` lists every way the data breaks the contract (empty when it keeps it);
// `checksums` has the stored and the recomputed (RFC 8785 + sha256) checksum of every snapshot.
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { createClient } from 'redis';

const [url, namespace, mode] = process.argv.slice(2);
const prefix = `configsync:{${namespace}}:`;
const keys = {
  state: `${prefix}state`,
  current: `${prefix}current`,
  agents: `${prefix}agents`,
  events: `${prefix}events`,
  changes: `${prefix}changes`,
  history: (agentId) => `${prefix}history:${agentId}`,
};

const SHA = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/; // SHA-1, or SHA-256 repositories
const CHECKSUM = /^[0-9a-f]{64}$/;
const UTC_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/; // applied_at, heartbeat_at, synced_at
const ISO_OFFSET = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)$/; // committed_at
const DECIMAL = /^(?:0|[1-9]\d*)$/;
const AGENT_ID = /^[a-z0-9][a-z0-9._-]*(?:\/[a-z0-9][a-z0-9._-]*)*$/;
const SCHEMA_REF = /^[A-Za-z_][\w.]*:[A-Za-z_]\w*$/;
const STATE_FIELDS = ['applied_at', 'branch', 'commit', 'contract', 'epoch', 'heartbeat_at',
  'last_error', 'revision', 'schema', 'seen', 'source'];
const STATE_OPTIONAL = ['heartbeat_every', 'claimed']; // heartbeat_every: by a polling daemon
// (not by --once); claimed: how the state was built (first start, --adopt, a reclaim)
const SNAPSHOT_KEYS = ['agent_id', 'author', 'checksum', 'commit', 'committed_at', 'config',
  'message', 'synced_at', 'version'];
const ERROR_KEYS = ['column', 'commit', 'errors', 'file', 'line', 'message'];
const EVENT_KEYS = {
  applied: ['changes', 'commit', 'count', 'epoch', 'revision', 'type'],
  rejected: ['commit', 'epoch', 'error', 'revision', 'type'],
  rebuilt: ['commit', 'epoch', 'revision', 'type'],
};
const CHANGE_KEYS = ['agent_id', 'deleted', 'version'];
const CHANGES_MAX = 1000;

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v, least = 0) => Number.isSafeInteger(v) && v >= least;
const sha256 = (text) => createHash('sha256').update(text, 'utf8').digest('hex');
// UTF-16 code unit order: JavaScript's default sort, and RFC 8785's order for keys
const utf16 = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

function exactKeys(where, value, expected) {
  const found = Object.keys(value).sort(utf16);
  if (found.join('\n') !== [...expected].sort(utf16).join('\n')) {
    problem(where, `keys ${JSON.stringify(found)}, expected ${JSON.stringify(expected)}`);
  }
}

function parse(where, text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    problem(where, `not JSON: ${err.message}`);
    return undefined;
  }
}

// Integer literals a JSON reader cannot hold exactly (beyond ±(2^53-1): JSON.parse rounds
// them). Found in the text: once parsed, 1e+20 (a float, exact) and 100000000000000000000
// (an integer, beyond) are the same number.
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
function unsafeIntegers(where, text) {
  const token = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
  for (const [found] of text.matchAll(token)) {
    if (found.startsWith('"') || /[.eE]/.test(found)) continue;
    const value = BigInt(found);
    if (value > MAX_SAFE || value < -MAX_SAFE) {
      problem(where, `integer ${found} is outside ±(2^53-1): JSON readers round it`);
    }
  }
}

// -- state --------------------------------------------------------------------------------

function checkState(state) {
  const where = 'state';
  for (const name of Object.keys(state)) {
    if (!STATE_FIELDS.includes(name) && !STATE_OPTIONAL.includes(name)) {
      problem(where, `undocumented field ${name}`);
    }
  }
  for (const name of STATE_FIELDS) {
    if (!(name in state)) problem(where, `no ${name}`);
  }
  if (!SHA.test(state.seen ?? '')) problem(where, `seen ${JSON.stringify(state.seen)}`);
  if ('claimed' in state && !['first', 'adopt', 'reclaim'].includes(state.claimed)) {
    problem(where, `claimed ${JSON.stringify(state.claimed)} is none of first, adopt, reclaim`);
  }
  if ('heartbeat_every' in state && !(Number(state.heartbeat_every) > 0)) {
    problem(where, `heartbeat_every ${JSON.stringify(state.heartbeat_every)} is no positive number`);
  }
  // "" only while no commit ever applied (every commit so far was rejected)
  if (state.commit !== '' && !SHA.test(state.commit ?? '')) {
    problem(where, `commit ${JSON.stringify(state.commit)}`);
  }
  if (!DECIMAL.test(state.revision ?? '') || !Number.isSafeInteger(Number(state.revision))) {
    problem(where, `revision ${JSON.stringify(state.revision)} is no decimal integer`);
  }
  if ((state.commit === '') !== (state.revision === '0')) {
    problem(where, `commit ${JSON.stringify(state.commit)} with revision ${state.revision}`);
  }
  if (!state.epoch) problem(where, 'epoch is empty');
  if (!state.branch) problem(where, 'branch is empty');
  if (typeof state.source !== 'string' || !state.source) problem(where, 'source is empty');
  for (const name of ['applied_at', 'heartbeat_at']) {
    if (!UTC_MS.test(state[name] ?? '')) problem(where, `${name} ${JSON.stringify(state[name])}`);
  }
  if (state.schema !== '' && !SCHEMA_REF.test(state.schema ?? '')) {
    problem(where, `schema ${JSON.stringify(state.schema)}`);
  }
  if (state.contract !== '2') problem(where, `contract ${JSON.stringify(state.contract)}, not "2"`);
  if (state.last_error) {
    const err = parse('state.last_error', state.last_error);
    if (isObject(err)) {
      exactKeys('state.last_error', err, ERROR_KEYS);
      if (!SHA.test(err.commit ?? '')) problem('state.last_error', 'commit');
      if (typeof err.file !== 'string' || !err.file) problem('state.last_error', 'file');
      if (!isCount(err.line, 1) || !isCount(err.column, 1)) {
        problem('state.last_error', 'line and column are integers from 1');
      }
      if (typeof err.message !== 'string' || !err.message) problem('state.last_error', 'message');
      if (!isCount(err.errors, 1)) problem('state.last_error', 'errors is a count from 1');
      if (err.commit !== state.seen) problem('state.last_error', 'commit is not state.seen');
    } else if (err !== undefined) {
      problem('state.last_error', 'not a JSON object');
    }
  }
}

// -- snapshots ----------------------------------------------------------------------------

const checksums = [];
const read = {}; // what this reader made of each current agent (but the fleet's)

function checkSnapshot(where, text, agentId, version) {
  unsafeIntegers(where, text);
  const snap = parse(where, text);
  if (!isObject(snap)) {
    if (snap !== undefined) problem(where, 'not a JSON object');
    return undefined;
  }
  exactKeys(where, snap, SNAPSHOT_KEYS);
  if (snap.agent_id !== agentId) problem(where, `agent_id ${JSON.stringify(snap.agent_id)}`);
  if (!isCount(snap.version, 1)) problem(where, `version ${JSON.stringify(snap.version)}`);
  if (version !== undefined && snap.version !== version) {
    problem(where, `version ${snap.version} under field ${version}`);
  }
  if (!CHECKSUM.test(snap.checksum ?? '')) problem(where, 'checksum is no sha256 hex');
  if (!SHA.test(snap.commit ?? '')) problem(where, `commit ${JSON.stringify(snap.commit)}`);
  if (typeof snap.author !== 'string' || !/^[^<>\n]* <[^<>\n]*>$/.test(snap.author)) {
    problem(where, `author ${JSON.stringify(snap.author)} is not "Name <email>"`);
  }
  if (!ISO_OFFSET.test(snap.committed_at ?? '')) {
    problem(where, `committed_at ${JSON.stringify(snap.committed_at)}`);
  }
  if (typeof snap.message !== 'string' || /[\n\r]/.test(snap.message)) {
    problem(where, 'message is not one line');
  }
  if (!UTC_MS.test(snap.synced_at ?? '')) {
    problem(where, `synced_at ${JSON.stringify(snap.synced_at)}`);
  }
  const config = snap.config;
  if (!isObject(config)) {
    problem(where, 'config is not an object');
    return snap;
  }
  for (const gone of ['extends', 'system_prompt_file']) {
    if (gone in config) problem(where, `config has ${gone}`);
  }
  if (typeof config.system_prompt !== 'string' || typeof config.model !== 'string') {
    problem(where, 'config lacks a system_prompt or model string');
  }
  let computed = null;
  try {
    const text = canonicalize(config);
    computed = sha256(text);
    if (where.startsWith('current') && !agentId.startsWith('fleet/')) {
      const { version, commit, author, committed_at, message } = snap;
      read[agentId] = { version, commit, author, committed_at, message, canonical: text };
    }
  } catch (err) {
    problem(where, `canonicalize: ${err.message}`);
  }
  checksums.push({ where, agent_id: agentId, version: snap.version, stored: snap.checksum,
    computed });
  return snap;
}

// -- events -------------------------------------------------------------------------------

function checkEvent(where, event) {
  if (!isObject(event)) {
    problem(where, 'not a JSON object');
    return;
  }
  const expected = EVENT_KEYS[event.type];
  if (!expected) {
    problem(where, `type ${JSON.stringify(event.type)}`);
    return;
  }
  exactKeys(where, event, expected);
  if (!isCount(event.revision)) problem(where, `revision ${JSON.stringify(event.revision)}`);
  if (typeof event.epoch !== 'string' || !event.epoch) problem(where, 'epoch');
  if (!(SHA.test(event.commit ?? '') || (event.type === 'rebuilt' && event.commit === ''))) {
    problem(where, `commit ${JSON.stringify(event.commit)}`);
  }
  if (event.type === 'rejected' && (typeof event.error !== 'string' || !event.error
      || /[\n\r]/.test(event.error))) {
    problem(where, 'error is not one non-empty line');
  }
  if (event.type !== 'applied') return;
  if (!isCount(event.count)) problem(where, `count ${JSON.stringify(event.count)}`);
  if (event.changes === null) {
    if (!(event.count > CHANGES_MAX)) problem(where, `changes null with count ${event.count}`);
    return;
  }
  if (!Array.isArray(event.changes)) {
    problem(where, 'changes is neither a list nor null');
    return;
  }
  if (event.changes.length !== event.count) problem(where, 'count is not the length of changes');
  let previous = null;
  for (const [i, change] of event.changes.entries()) {
    const at = `${where}.changes[${i}]`;
    if (!isObject(change)) {
      problem(at, 'not an object');
      continue;
    }
    exactKeys(at, change, CHANGE_KEYS);
    if (!AGENT_ID.test(change.agent_id ?? '')) problem(at, 'agent_id');
    if (!isCount(change.version, 1)) problem(at, 'version');
    if (typeof change.deleted !== 'boolean') problem(at, 'deleted is not a boolean');
    if (previous !== null && !(utf16(previous, change.agent_id) < 0)) {
      problem(at, 'changes are not sorted by agent_id (each agent once)');
    }
    previous = change.agent_id;
  }
}

// Revisions: within an epoch each applied event is the one before + 1 (or the same, for a
// commit applied again); rejected events carry the revision served; rebuilt starts an epoch.
function checkEventOrder(events) {
  let epoch = null;
  let revision = null;
  for (const [i, event] of events.entries()) {
    if (!isObject(event) || !EVENT_KEYS[event.type]) continue;
    const where = `events[${i}]`;
    if (event.type === 'rebuilt') {
      if (event.epoch === epoch) problem(where, 'rebuilt without a new epoch');
    } else if (event.epoch !== epoch) {
      if (epoch !== null) problem(where, `epoch changed without a rebuilt event`);
    } else if (event.type === 'applied') {
      if (event.revision !== revision + 1 && event.revision !== revision) {
        problem(where, `applied revision ${event.revision} after ${revision}`);
      }
    } else if (event.revision !== revision) {
      problem(where, `rejected revision ${event.revision} while serving ${revision}`);
    }
    epoch = event.epoch;
    revision = event.revision;
  }
}

// -- following (the README's "what a reader must do") -------------------------------------

class Follower {
  constructor(client) {
    this.client = client;
    this.epoch = null;
    this.revision = -1;
    this.held = new Map(); // agent id -> {version, checksum}
    this.decisions = [];
    this.received = [];
    this.queue = Promise.resolve();
  }

  // Re-read state, then current: current is then at least as new as state's revision.
  async reread() {
    const state = await this.client.hGetAll(keys.state);
    if (!('seen' in state)) return; // no data yet: keep what is held
    const current = await this.client.hGetAll(keys.current);
    const sameEpoch = state.epoch === this.epoch;
    const fresh = new Map();
    for (const [agentId, text] of Object.entries(current)) {
      const snap = JSON.parse(text);
      const held = this.held.get(agentId);
      fresh.set(agentId, sameEpoch && held && held.version > snap.version ? held
        : { version: snap.version, checksum: snap.checksum });
    }
    this.held = fresh;
    this.epoch = state.epoch;
    this.revision = Number(state.revision);
  }

  push(message) {
    this.received.push(message);
    this.queue = this.queue.then(() => this.handle(message)).catch((err) => {
      problem('follower', err.stack);
    });
  }

  async handle(message) {
    let event;
    try {
      event = JSON.parse(message);
    } catch {
      return this.decide(null, 'reread: unparseable', () => this.reread());
    }
    const ok = isObject(event) && EVENT_KEYS[event.type] && Number.isSafeInteger(event.revision);
    if (!ok) return this.decide(event, 'reread: unknown event', () => this.reread());
    if (event.epoch !== this.epoch) return this.decide(event, 'reread: epoch', () => this.reread());
    if (event.revision <= this.revision) return this.decide(event, 'ignore');
    if (event.type !== 'applied' || event.revision > this.revision + 1) {
      return this.decide(event, 'reread: gap', () => this.reread());
    }
    if (!Array.isArray(event.changes)) {
      return this.decide(event, 'reread: changes null', () => this.reread());
    }
    return this.decide(event, 'apply', () => this.apply(event));
  }

  // revision R + 1: read the listed agents (they may be newer still: later commits are
  // announced by later events), drop the deleted ones
  async apply(event) {
    const updated = event.changes.filter((c) => !c.deleted).map((c) => c.agent_id);
    const texts = updated.length ? await this.client.hmGet(keys.current, updated) : [];
    updated.forEach((agentId, i) => {
      if (texts[i] === null) {
        this.held.delete(agentId); // deleted by a later commit, whose event follows
        return;
      }
      const snap = JSON.parse(texts[i]);
      const held = this.held.get(agentId);
      if (!held || held.version <= snap.version) {
        this.held.set(agentId, { version: snap.version, checksum: snap.checksum });
      }
    });
    for (const change of event.changes) {
      const held = this.held.get(change.agent_id);
      if (change.deleted && held && held.version <= change.version) {
        this.held.delete(change.agent_id);
      }
    }
    this.revision = event.revision;
  }

  async decide(event, decision, action) {
    const entry = { type: event?.type ?? null, revision: event?.revision ?? null, decision };
    this.decisions.push(entry);
    if (action) await action();
    process.stdout.write(`decided ${JSON.stringify(entry)}\n`);
  }
}

async function lastStreamId(client) {
  const [last] = await client.xRevRange(keys.events, '+', '-', { COUNT: 1 });
  return last ? last.id : null;
}

async function until(condition, seconds) {
  const deadline = Date.now() + seconds * 1000;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

async function follow(client) {
  const sub = client.duplicate();
  sub.on('error', (err) => problem('subscriber', err.message));
  await sub.connect();
  const follower = new Follower(client);
  // subscribe first, then load: nothing published in between is missed
  await sub.subscribe(keys.changes, (message) => follower.push(message));
  const since = await lastStreamId(client);
  await follower.reread();
  process.stdout.write('ready\n');
  await new Promise((resolve) => {
    process.stdin.on('end', resolve);
    process.stdin.resume();
  });
  // every event the stream holds since we subscribed has been published: wait for them all
  const entries = async () => (await client.xRange(keys.events, since ?? '-', '+'))
    .filter((entry) => entry.id !== since);
  const expected = (await entries()).map((entry) => entry.message.event);
  if (!(await until(() => follower.received.length >= expected.length, 10))) {
    problem('follower', `received ${follower.received.length} of ${expected.length} events`);
  }
  await follower.queue;
  await sub.unsubscribe(keys.changes);
  await sub.quit();
  if (JSON.stringify(follower.received) !== JSON.stringify(expected)) {
    problem('follower', 'the channel did not carry the same JSON as the stream, in order');
  }
  const state = await client.hGetAll(keys.state);
  const current = await client.hGetAll(keys.current);
  if (follower.epoch !== state.epoch || follower.revision !== Number(state.revision)) {
    problem('follower', `holds ${follower.epoch}/${follower.revision}, state says `
      + `${state.epoch}/${state.revision}`);
  }
  const held = Object.fromEntries([...follower.held].sort(([a], [b]) => utf16(a, b)));
  const truth = Object.fromEntries(Object.entries(current).sort(([a], [b]) => utf16(a, b))
    .map(([agentId, text]) => {
      const snap = JSON.parse(text);
      return [agentId, { version: snap.version, checksum: snap.checksum }];
    }));
  if (JSON.stringify(held) !== JSON.stringify(truth)) {
    problem('follower', 'what it followed differs from current');
  }
  return { decisions: follower.decisions, received: follower.received.length,
    agents: follower.held.size };
}

// -- the whole namespace ------------------------------------------------------------------

async function check(client) {
  // state first, then current (current is then at least as new as the state)
  const state = await client.hGetAll(keys.state);
  const current = await client.hGetAll(keys.current);
  const agents = await client.hGetAll(keys.agents);
  checkState(state);

  const ids = Object.keys(agents).sort(utf16);
  const histories = await Promise.all(ids.map((agentId) => client.hGetAll(keys.history(agentId))));
  const history = new Map(ids.map((agentId, i) => [agentId, histories[i]]));
  for (const agentId of ids) {
    const where = `agents.${agentId}`;
    if (!AGENT_ID.test(agentId)) problem(where, 'not an agent id');
    if (!DECIMAL.test(agents[agentId]) || agents[agentId] === '0') problem(where, 'no version');
    const versions = Object.keys(history.get(agentId));
    for (const field of versions) {
      if (!DECIMAL.test(field)) problem(`history.${agentId}`, `field ${field}`);
      checkSnapshot(`history.${agentId}.${field}`, history.get(agentId)[field], agentId,
        Number(field));
    }
    if (versions.length && String(Math.max(...versions.map(Number))) !== agents[agentId]) {
      problem(where, `${agents[agentId]} is not the history's highest version`);
    }
    if (!(agents[agentId] in history.get(agentId))) {
      problem(where, 'the last version written is not in the history');
    }
  }
  for (const [agentId, text] of Object.entries(current)) {
    const snap = checkSnapshot(`current.${agentId}`, text, agentId);
    if (!snap) continue;
    if (agents[agentId] !== String(snap.version)) {
      problem(`current.${agentId}`, `version ${snap.version}, agents index ${agents[agentId]}`);
    }
    if (history.get(agentId)?.[String(snap.version)] !== text) {
      problem(`current.${agentId}`, 'not the same text as its version in history');
    }
  }

  const entries = await client.xRange(keys.events, '-', '+');
  const events = entries.map((entry, i) => {
    const fields = Object.keys(entry.message);
    if (fields.join() !== 'event') problem(`events[${i}]`, `fields ${JSON.stringify(fields)}`);
    const event = parse(`events[${i}]`, entry.message.event);
    checkEvent(`events[${i}]`, event);
    return event;
  });
  checkEventOrder(events);
  // every listed version is in the history, made by that commit (deleted: made earlier)
  events.forEach((event, i) => {
    if (event?.type !== 'applied' || !Array.isArray(event.changes)) return;
    for (const change of event.changes) {
      const text = history.get(change.agent_id)?.[String(change.version)];
      const snap = text === undefined ? undefined : JSON.parse(text);
      if (snap === undefined) {
        problem(`events[${i}]`, `${change.agent_id} v${change.version} is not in history`);
      } else if ((snap.commit === event.commit) === change.deleted) {
        problem(`events[${i}]`, `${change.agent_id} v${change.version} was made by ${snap.commit}`);
      }
    }
  });
  const served = events.filter((e) => e?.type === 'applied' || e?.type === 'rebuilt').at(-1);
  if (served && (served.commit !== state.commit || String(served.revision) !== state.revision
      || served.epoch !== state.epoch)) {
    problem('events', 'the last applied or rebuilt event is not what state serves');
  }
  if (events.length && events.at(-1)?.commit !== state.seen) {
    problem('events', 'the last event is not about state.seen');
  }
  return { state, events };
}

const client = createClient({ url });
client.on('error', (err) => problem('redis', err.message));
await client.connect();
const follower = mode === '--follow' ? await follow(client) : null;
const { state, events } = await check(client);
await client.quit();
process.stdout.write(`${JSON.stringify({ contract: state.contract ?? null, state, problems,
  checksums, read, events, follower })}\n`);
