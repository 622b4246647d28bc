// End-to-end: the real WatermelonDB `synchronize()` (LokiJS adapter, in memory) against a
// starsync hub, next to a `starsync-node` desktop. Driven by tests/api/watermelon.rs, which
// starts the server and passes:
//   STARSYNC_URL       the hub's base URL
//   STARSYNC_WM_TOKEN  a node token, shared by the two WatermelonDB apps of this test
//   STARSYNC_NODE_BIN  the `starsync-node` binary
//   STARSYNC_DESKTOP   the data directory of a desktop node already initialised on that hub
//   STARSYNC_WM_IDS    `uuid` to give WatermelonDB records UUID ids, `native` for its own
//                      16-character ids
// Any WatermelonDB `[Sync]` log message fails the run. Prints one line per scenario and the
// closing line "N passed, N failed"; exits non-zero on any failure.
'use strict'

const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')
const crypto = require('node:crypto')

// WatermelonDB logs through console; every message is kept, and `[Sync]` ones are failures.
const syncMessages = []
for (const level of ['log', 'warn', 'error', 'info', 'debug']) {
  const original = console[level].bind(console)
  console[level] = (...args) => {
    const text = args.map((a) => (a instanceof Error ? a.stack : String(a))).join(' ')
    if (text.includes('[Sync]')) syncMessages.push(`${level}: ${text}`)
    if (text.includes('[🍉] [Loki]') || text.includes('LokiJSAdapter {useIncrementalIndexedDB')) return
    original(...args)
  }
}

const { Database, Model, appSchema, tableSchema, Q } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { synchronize } = require('@nozbe/watermelondb/sync')
const { setGenerator } = require('@nozbe/watermelondb/utils/common/randomId')

const URL_BASE = process.env.STARSYNC_URL
const TOKEN = process.env.STARSYNC_WM_TOKEN
const NODE_BIN = process.env.STARSYNC_NODE_BIN
const DESKTOP = process.env.STARSYNC_DESKTOP
for (const [k, v] of Object.entries({ URL_BASE, TOKEN, NODE_BIN, DESKTOP })) {
  if (!v) throw new Error(`missing environment for ${k}`)
}
if (process.env.STARSYNC_WM_IDS === 'uuid') setGenerator(() => crypto.randomUUID())

// ---- the app: schema, models, and the synchronize() call an app makes ----

const schema = appSchema({
  version: 1,
  tables: [
    tableSchema({
      name: 'tasks',
      columns: [
        { name: 'title', type: 'string' },
        { name: 'done', type: 'boolean' },
        { name: 'position', type: 'number' },
        { name: 'project_id', type: 'string', isOptional: true },
      ],
    }),
    tableSchema({ name: 'projects', columns: [{ name: 'name', type: 'string' }] }),
  ],
})
class Task extends Model {
  static table = 'tasks'
}
class Project extends Model {
  static table = 'projects'
}

let dbCount = 0
function openApp(name) {
  const adapter = new LokiJSAdapter({
    schema,
    useWebWorker: false,
    useIncrementalIndexedDB: false,
    dbName: `starsync-${name}-${process.pid}-${dbCount++}`,
  })
  const db = new Database({ adapter, modelClasses: [Task, Project] })
  return { name, db, token: TOKEN }
}

class HttpError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}: ${JSON.stringify(body)}`)
    this.status = status
    this.body = body
  }
}

async function pullChanges(app, { lastPulledAt, schemaVersion, migration }) {
  const params = new URLSearchParams({
    last_pulled_at: String(lastPulledAt),
    schema_version: String(schemaVersion),
    migration: JSON.stringify(migration),
  })
  const headers = app.token === undefined ? {} : { Authorization: `Bearer ${app.token}` }
  const response = await fetch(`${URL_BASE}/api/sync/watermelon/pull?${params}`, { headers })
  const body = await response.json()
  if (!response.ok) throw new HttpError(response.status, body)
  app.lastPull = body
  return { changes: body.changes, timestamp: body.timestamp }
}

async function pushChanges(app, { changes, lastPulledAt }) {
  const headers = { 'Content-Type': 'application/json' }
  if (app.token !== undefined) headers.Authorization = `Bearer ${app.token}`
  const response = await fetch(`${URL_BASE}/api/sync/watermelon/push`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ changes, last_pulled_at: lastPulledAt }),
  })
  const body = await response.json()
  if (!response.ok) throw new HttpError(response.status, body)
  return body // { experimentalRejectedIds }
}

// `hooks.beforePush` / `hooks.afterPush` let a scenario act between the pull and the push.
async function sync(app, hooks = {}) {
  const log = {}
  await synchronize({
    database: app.db,
    pullChanges: (args) => pullChanges(app, args),
    pushChanges: async (args) => {
      if (hooks.beforePush) await hooks.beforePush(args)
      const answer = await pushChanges(app, args)
      if (hooks.afterPush) await hooks.afterPush(answer)
      return answer
    },
    log,
  })
  return log
}

// ---- local helpers ----

async function create(app, table, fields) {
  return app.db.write(() =>
    app.db.get(table).create((r) => {
      for (const [k, v] of Object.entries(fields)) r._setRaw(k, v)
    }),
  )
}

async function update(app, table, id, fields) {
  const r = await app.db.get(table).find(id)
  await app.db.write(() =>
    r.update(() => {
      for (const [k, v] of Object.entries(fields)) r._setRaw(k, v)
    }),
  )
}

async function remove(app, table, id) {
  const r = await app.db.get(table).find(id)
  await app.db.write(() => r.markAsDeleted())
}

const COLUMNS = { tasks: ['title', 'done', 'position', 'project_id'], projects: ['name'] }

function pick(table, raw) {
  const out = {}
  for (const c of COLUMNS[table]) out[c] = raw[c] === undefined ? null : raw[c]
  return out
}

async function contents(app, table) {
  const rows = await app.db.get(table).query().fetch()
  const out = {}
  for (const r of rows) out[r.id] = pick(table, r._raw)
  return out
}

async function unsynced(app) {
  let n = 0
  for (const table of Object.keys(COLUMNS)) {
    n += await app.db.get(table).query(Q.where('_status', Q.notEq('synced'))).fetchCount()
    n += (await app.db.adapter.getDeletedRecords(table)).length
  }
  return n
}

// Asynchronous on purpose: a synchronous child process would stop the event loop, and fetch's
// pooled connections would miss the server closing them while idle.
async function desktop(...args) {
  const { stdout } = await promisify(execFile)(NODE_BIN, ['--data-dir', DESKTOP, '--json', ...args], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { PATH: process.env.PATH, RUST_LOG: 'warn' },
  })
  return stdout.trim() ? JSON.parse(stdout) : null
}

const desk = {
  create: async (table, data) => (await desktop('create', table, JSON.stringify(data))).uuid,
  put: (table, id, data) => desktop('put', table, id, JSON.stringify(data)),
  remove: (table, id) => desktop('delete', table, id),
  get: (table, id) => desktop('get', table, id),
  sync: () => desktop('sync'),
  async contents(table) {
    const out = {}
    for (const e of await desktop('list', table)) out[e.entity_uuid] = pick(table, e.data)
    return out
  },
}

async function assertConverged(apps, label) {
  for (const table of Object.keys(COLUMNS)) {
    const hub = await desk.contents(table)
    for (const app of apps) {
      assert.deepEqual(await contents(app, table), hub, `${label}: ${app.name} ${table} = desktop`)
      assert.equal(await unsynced(app), 0, `${label}: ${app.name} has nothing left to push`)
    }
  }
}

function task(title, position, extra = {}) {
  return { title, done: false, position, project_id: null, ...extra }
}

// ---- scenarios ----

const A = openApp('A')
const B = openApp('B')
const state = {}

const scenarios = [
  [
    'first sync of an existing data set',
    async () => {
      const projectId = await desk.create('projects', { name: 'Home' })
      for (let i = 0; i < 40; i++) await desk.create('tasks', task(`desktop task ${i}`, i, { project_id: projectId }))
      await desk.sync()
      await sync(A)
      assert.equal(Object.keys(await contents(A, 'tasks')).length, 40)
      assert.deepEqual(await contents(A, 'projects'), { [projectId]: { name: 'Home' } })
      assert.equal(typeof A.lastPull.timestamp, 'number')
      for (const list of Object.values(A.lastPull.changes)) {
        assert.deepEqual(Object.keys(list).sort(), ['created', 'deleted', 'updated'])
        for (const r of list.created) assert.ok(!('_status' in r) && !('_changed' in r))
      }
      await assertConverged([A], 'first sync')
    },
  ],
  [
    'create/update/delete both ways: two WatermelonDB apps sharing a token and a desktop',
    async () => {
      const existing = Object.keys(await contents(A, 'tasks')).sort()
      const a1 = await create(A, 'tasks', task('from A', 100))
      await update(A, 'tasks', existing[0], { title: 'renamed by A' })
      await remove(A, 'tasks', existing[1])
      await sync(A)
      await desk.sync()
      assert.equal((await desk.get('tasks', a1.id)).data.title, 'from A')
      assert.equal((await desk.get('tasks', existing[0])).data.title, 'renamed by A')

      // B shares A's token and has never synced: everything, A's record included, is `created`.
      await sync(B)
      assert.ok(B.lastPull.changes.tasks.created.some((r) => r.id === a1.id))
      // A gets its own record back as `updated`, never `created`.
      await sync(A)
      const back = A.lastPull.changes.tasks
      assert.ok(!back.created.some((r) => r.id === a1.id), 'own record not sent as created')
      assert.ok(back.updated.some((r) => r.id === a1.id), 'own record comes back as updated')

      const d1 = await desk.create('tasks', task('from desktop', 200))
      await desk.put('tasks', a1.id, task('from A, edited on desktop', 100))
      await desk.remove('tasks', existing[2])
      await desk.sync()
      await sync(A)
      await sync(B)
      const b1 = await create(B, 'tasks', task('from B', 300))
      await update(B, 'tasks', d1, { done: true })
      await sync(B)
      await sync(A)
      assert.ok(A.lastPull.changes.tasks.created.some((r) => r.id === b1.id), 'B\'s record is new to A')
      await desk.sync()
      await sync(A)
      await sync(B)
      await assertConverged([A, B], 'both ways')
      assert.equal((await desk.get('tasks', d1)).data.done, true)
      assert.equal((await contents(A, 'tasks'))[existing[2]], undefined)
      state.tasks = Object.keys(await contents(A, 'tasks')).sort()
    },
  ],
  [
    'concurrent edit: the push is refused (409), the client pulls, merges per column, pushes again',
    async () => {
      // A record not done yet, so the desktop's edit below really changes it (a record already
      // done, such as the one B finished above, would make that edit a no-op and the push
      // would rightly go through). Not one of those the next scenario uses.
      const now = await contents(A, 'tasks')
      const x = state.tasks.find((id, i) => i !== 4 && i !== 5 && !now[id].done)
      await update(A, 'tasks', x, { title: 'title by A' })
      let refused
      try {
        await sync(A, {
          // The desktop changes the same record between A's pull and A's push.
          beforePush: async () => {
            const current = (await desk.get('tasks', x)).data
            await desk.put('tasks', x, { ...current, done: true })
            await desk.sync()
          },
        })
      } catch (e) {
        refused = e
      }
      assert.ok(refused instanceof HttpError, `push refused: ${refused}`)
      assert.equal(refused.status, 409)
      assert.equal(refused.body.error, 'conflict')
      assert.ok((await unsynced(A)) > 0, 'nothing marked synced after a 409')
      await sync(A)
      await desk.sync()
      await sync(B)
      const merged = (await desk.get('tasks', x)).data
      assert.equal(merged.title, 'title by A')
      assert.equal(merged.done, true)
      await assertConverged([A, B], 'concurrent edit')
    },
  ],
  [
    'delete against edit',
    async () => {
      const [y, z] = [state.tasks[4], state.tasks[5]]
      // A deletes y while the desktop edits it: A pulls the edit, then its deletion goes through.
      await remove(A, 'tasks', y)
      await desk.put('tasks', y, task('edited on desktop', 4))
      await desk.sync()
      // The desktop deletes z while A edits it: the deletion reaches A, whose edit goes with it.
      await update(A, 'tasks', z, { title: 'edited by A' })
      await desk.remove('tasks', z)
      await desk.sync()
      await sync(A)
      await desk.sync()
      await sync(B)
      assert.equal((await desk.contents('tasks'))[y], undefined)
      assert.equal((await desk.contents('tasks'))[z], undefined)
      await assertConverged([A, B], 'delete against edit')
    },
  ],
  [
    'a lost push answer, then a retry',
    async () => {
      const lost = await create(A, 'tasks', task('answer lost', 500))
      await update(A, 'tasks', state.tasks[6], { title: 'answer lost too' })
      let failed
      try {
        await sync(A, {
          afterPush: async () => {
            throw new Error('connection reset (answer lost)')
          },
        })
      } catch (e) {
        failed = e
      }
      assert.match(String(failed), /answer lost/)
      assert.ok((await unsynced(A)) > 0)
      await sync(A) // pulls its own applied push back as `updated`, pushes again
      await desk.sync()
      await sync(B)
      const all = await desk.contents('tasks')
      assert.equal(Object.values(all).filter((t) => t.title === 'answer lost').length, 1)
      assert.equal(all[lost.id].title, 'answer lost')
      await assertConverged([A, B], 'lost answer')
    },
  ],
  [
    '5,000 records in one sync',
    async () => {
      await A.db.write(async () => {
        const c = A.db.get('tasks')
        await A.db.batch(
          Array.from({ length: 5000 }, (_, i) =>
            c.prepareCreate((r) => {
              r._setRaw('title', `bulk ${i}`)
              r._setRaw('position', 10000 + i)
            }),
          ),
        )
      })
      let t = process.hrtime.bigint()
      await sync(A)
      const pushMs = Number(process.hrtime.bigint() - t) / 1e6
      t = process.hrtime.bigint()
      await sync(B)
      const pullMs = Number(process.hrtime.bigint() - t) / 1e6
      assert.equal(B.lastPull.changes.tasks.created.length, 5000)
      console.log(`TIMING push of 5000 records (one synchronize): ${pushMs.toFixed(0)} ms`)
      console.log(`TIMING pull of 5000 records (one synchronize): ${pullMs.toFixed(0)} ms`)
      await desk.sync()
      await sync(A)
      await assertConverged([A, B], '5,000 records')
    },
  ],
  [
    'wrong and missing tokens',
    async () => {
      const before = await contents(A, 'tasks')
      for (const token of ['not-a-token', undefined]) {
        const app = { ...A, token }
        await create(A, 'tasks', task(`with token ${token}`, 1))
        let refused
        try {
          await synchronize({
            database: A.db,
            pullChanges: (args) => pullChanges(app, args),
            pushChanges: (args) => pushChanges(app, args),
          })
        } catch (e) {
          refused = e
        }
        assert.ok(refused instanceof HttpError, `refused: ${refused}`)
        assert.equal(refused.status, 401)
        assert.equal(refused.body.error, 'unauthorized')
        // And a push alone, with the same token: refused, nothing applied.
        const r = await fetch(`${URL_BASE}/api/sync/watermelon/push`, {
          method: 'POST',
          headers: token ? { Authorization: `Bearer ${token}` } : {},
          body: JSON.stringify({ changes: {}, last_pulled_at: 1 }),
        })
        assert.equal(r.status, 401)
      }
      assert.equal(Object.keys(await contents(A, 'tasks')).length, Object.keys(before).length + 2)
      await sync(A) // the right token: the two records go through
      await desk.sync()
      await sync(B)
      await assertConverged([A, B], 'after token errors')
    },
  ],
]

;(async () => {
  let passed = 0
  let failed = 0
  for (const [name, run] of scenarios) {
    const before = syncMessages.length
    try {
      await run()
      if (syncMessages.length > before) {
        throw new Error(`WatermelonDB logged:\n  ${syncMessages.slice(before).join('\n  ')}`)
      }
      passed++
      console.log(`ok - ${name}`)
    } catch (e) {
      failed++
      console.log(`not ok - ${name}\n${e && e.stack ? e.stack : e}${e && e.cause ? `\ncause: ${e.cause.stack || e.cause}` : ''}`)
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed === 0 ? 0 : 1)
})()
