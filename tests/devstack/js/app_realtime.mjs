// supabase-js (realtime-js, V2 serializer with its binary broadcast frames) against the local
// stack: a broadcast acknowledged and echoed to its sender, presence track and untrack seen by
// another client. Prints what each step saw as one JSON line; exits non-zero on any failure.
import { createClient } from '@supabase/supabase-js'

const url = process.env.SUPABASE_URL
const key = process.env.SUPABASE_ANON_KEY
const safetyMs = 15000

function until(check, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const poll = () => {
      if (check()) return resolve()
      if (Date.now() - started > safetyMs) return reject(new Error(`timed out: ${what}`))
      setTimeout(poll, 20)
    }
    poll()
  })
}

function subscribed(channel) {
  return new Promise((resolve, reject) => channel.subscribe((status, error) => {
    if (status === 'SUBSCRIBED') resolve()
    else if (status !== 'CLOSED') reject(new Error(`${status}: ${error?.message}`))
  }))
}

const a = createClient(url, key)
const b = createClient(url, key)
try {
  const gotA = [], gotB = []
  const ca = a.channel('room', { config: { broadcast: { ack: true, self: true } } })
  const cb = b.channel('room')
  ca.on('broadcast', { event: 'wave' }, (m) => gotA.push(m))
  cb.on('broadcast', { event: 'wave' }, (m) => gotB.push(m))
  await subscribed(ca)
  await subscribed(cb)
  const ack = await ca.send({ type: 'broadcast', event: 'wave', payload: { n: 1, text: 'héllo' } })
  await until(() => gotA.length && gotB.length, 'broadcast')
  const unacked = await cb.send({ type: 'broadcast', event: 'wave', payload: { n: 2 } })
  await until(() => gotA.length === 2, 'second broadcast')

  const joins = [], leaves = []
  const pa = a.channel('lobby', { config: { presence: { key: 'ada' } } })
  const pb = b.channel('lobby', { config: { presence: { key: 'bob' } } })
  pa.on('presence', { event: 'sync' }, () => {})
  pb.on('presence', { event: 'join' }, ({ key }) => joins.push(key))
  pb.on('presence', { event: 'leave' }, ({ key }) => leaves.push(key))
  await subscribed(pa)
  await subscribed(pb)
  const tracked = await pa.track({ status: 'online' })
  await until(() => 'ada' in pb.presenceState(), 'presence join')
  const state = pb.presenceState()
  const untracked = await pa.untrack()
  await until(() => !('ada' in pb.presenceState()), 'presence leave')
  console.log(JSON.stringify({ ack, unacked, gotA, gotB, tracked, untracked, state, joins, leaves }))
  await a.removeAllChannels()
  await b.removeAllChannels()
  process.exit(0)
} catch (error) {
  console.error(error.stack || String(error))
  process.exit(1)
}
