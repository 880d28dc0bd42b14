// supabase-js against the local stack's Realtime Authorization and Broadcast from Database: a
// member joins a private channel, a stranger is refused, a read-only member's acknowledged send
// times out, a database function's realtime.send arrives with meta.id, httpSend is refused to the
// stranger and accepted from the member, and send() on a channel that is not joined goes over
// REST. Prints what each step saw as one JSON line; exits non-zero on any failure.
import { createClient } from '@supabase/supabase-js'

const url = process.env.SUPABASE_URL
const key = process.env.SUPABASE_ANON_KEY
const topic = 'room:js'
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

function joined(channel) {
  return new Promise((resolve) => channel.subscribe((status, error) => {
    if (status !== 'CLOSED') resolve({ status, error: error ? error.message : null })
  }))
}

// A user's client: REST and Realtime both carry the user's token (set before any join).
async function as(token) {
  const sb = createClient(url, key, { accessToken: async () => token })
  await sb.realtime.setAuth(token)
  return sb
}
const ada = await as(process.env.ADA_TOKEN)
const bob = await as(process.env.BOB_TOKEN)
const eve = await as(process.env.EVE_TOKEN)
try {
  const gotB = []
  const ca = ada.channel(topic, { config: { private: true, broadcast: { ack: true } } })
  const cb = bob.channel(topic, { config: { private: true, broadcast: { ack: true } } })
  cb.on('broadcast', { event: '*' }, (m) => gotB.push(m))
  const adaJoin = await joined(ca)
  const bobJoin = await joined(cb)
  const eveJoin = await joined(eve.channel(topic, { config: { private: true } }))

  const bobSend = await cb.send({ type: 'broadcast', event: 'wave', payload: { from: 'bob' } }, { timeout: 1000 })
  const adaSend = await ca.send({ type: 'broadcast', event: 'wave', payload: { from: 'ada' } })
  await until(() => gotB.length === 1, 'ada\'s broadcast')

  const { error: rpcError } = await ada.rpc('shout', { words: 'hello' })
  if (rpcError) throw new Error(rpcError.message)
  await until(() => gotB.length === 2, 'the database broadcast')

  const eveHttp = await eve.channel('room:js:other', { config: { private: true } })
    .httpSend('wave', { from: 'eve' }).catch((e) => e.message)
  const adaHttp = await ca.httpSend('wave', { from: 'ada-http' })
  await until(() => gotB.length === 3, 'ada\'s httpSend')

  const rest = await as(process.env.ADA_TOKEN)
  const fallback = await rest.channel(topic, { config: { private: true } })
    .send({ type: 'broadcast', event: 'wave', payload: { from: 'ada-rest' } })
  await until(() => gotB.length === 4, 'the REST fallback')

  console.log(JSON.stringify({ adaJoin, bobJoin, eveJoin, bobSend, adaSend, gotB, eveHttp, adaHttp, fallback }))
  for (const sb of [ada, bob, eve, rest]) await sb.removeAllChannels()
  process.exit(0)
} catch (error) {
  console.error(error.stack || String(error))
  process.exit(1)
}
