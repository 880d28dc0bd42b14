// supabase-js (realtime-js over the V2 serializer, postgrest-js) against the local stack:
// subscribe to INSERTs on public.jobs, insert a row through REST, select it back, and print
// what each step saw as one JSON line. Exits non-zero on any failure.
import { createClient } from '@supabase/supabase-js'

const url = process.env.SUPABASE_URL
const key = process.env.SUPABASE_SERVICE_ROLE_KEY
const jobType = process.env.JOB_TYPE
const safetyMs = 20000

function within(promise, what) {
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), safetyMs))
  return Promise.race([promise, timeout])
}

const supabase = createClient(url, key)
let onChange, onLive
const changed = new Promise((resolve) => (onChange = resolve))
const live = new Promise((resolve) => (onLive = resolve))
const statuses = []

const channel = supabase
  .channel('js-roundtrip')
  .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'jobs', filter: `job_type=eq.${jobType}` }, onChange)
  .on('system', {}, (message) => {
    if (message.message === 'Subscribed to PostgreSQL') onLive(message)
  })
  .subscribe((status, error) => statuses.push(error ? `${status}: ${error.message}` : status))

try {
  const system = await within(live, 'Subscribed to PostgreSQL')
  const inserted = await supabase.from('jobs').insert({ job_type: jobType, payload: { from: 'js' } }).select()
  if (inserted.error) throw new Error(`insert: ${JSON.stringify(inserted.error)}`)
  const change = await within(changed, 'postgres_changes INSERT')
  const selected = await supabase.from('jobs').select('id, job_type, payload').eq('id', inserted.data[0].id).single()
  if (selected.error) throw new Error(`select: ${JSON.stringify(selected.error)}`)
  console.log(JSON.stringify({
    statuses,
    system,
    change,
    inserted: inserted.data,
    selected: selected.data,
    vsn: supabase.realtime.vsn,
  }))
  await supabase.removeChannel(channel)
  process.exit(0)
} catch (error) {
  console.error(error.stack || String(error), JSON.stringify({ statuses }))
  process.exit(1)
}
