const { Database, Model, appSchema, tableSchema } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { synchronize } = require('@nozbe/watermelondb/sync')
class Task extends Model { static table = 'tasks' }
const schema = appSchema({ version: 1, tables: [tableSchema({ name: 'tasks', columns: [{ name: 'title', type: 'string' }, { name: 'done', type: 'boolean' }] })] })
const adapter = new LokiJSAdapter({ schema, useWebWorker: false, useIncrementalIndexedDB: false, dbName: 'a' + Math.random() })
const db = new Database({ adapter, modelClasses: [Task] })
;(async () => {
  await db.write(() => db.get('tasks').create(t => { t._setRaw('title', 'x') }))
  await synchronize({ database: db,
    pullChanges: async (a) => { console.log('pull', a); return { changes: { tasks: { created: [{ id: 'abc', title: 'srv', done: true }], updated: [], deleted: [] } }, timestamp: 5 } },
    pushChanges: async (a) => { console.log('push', JSON.stringify(a)) } })
  const all = await db.get('tasks').query().fetch()
  console.log(all.map(r => r._raw))
})().catch(e => { console.error('ERR', e); process.exit(1) })
