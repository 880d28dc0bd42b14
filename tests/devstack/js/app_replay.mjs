// supabase-js against the local stack's Broadcast replay: messages a database function stored
// before anyone joined arrive on a private join that asks for a replay (since, limit) and not on
// one that does not; a user who may only read presence is refused; supabase-js itself refuses a
// replay on a public channel (the server's refusal is tests/devstack/test_realtime_replay.py's). Prints
// what each step saw as one JSON line; exits non-zero on any failure.
import { createClient } from '@supabase/supabase-js'

const url = process.env.SUPABASE_URL
const key = process.env.SUPABASE_ANON_KEY
const topic = 'room:replay'
const since = Number(process.env.SINCE)
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

async function as(token) {
  const sb = createClient(url, key, { accessToken: async () => token })
  await sb.realtime.setAuth(token)
  return sb
}

// Joins `name` with `config`; what it received once a live message (not replayed) came.
async function replayed(sb, name, config, live) {
  const got = []
  const channel = sb.channel(name, { config })
  channel.on('broadcast', { event: '*' }, (m) => got.push(m))
  const join = await joined(channel)
  if (join.status !== 'SUBSCRIBED') return { join, got }
  const { error } = await live()
  if (error) throw new Error(error.message)
  await until(() => got.some((m) => !m.meta?.replayed), 'the live message')
  await sb.removeChannel(channel)
  return { join, got: [...got] }
}

const ada = await as(process.env.ADA_TOKEN)
const bob = await as(process.env.BOB_TOKEN)
const wes = await as(process.env.WES_TOKEN)
try {
  const shout = (n, t) => () => ada.rpc('shout', { n, t })
  const replay = (options) => ({ private: true, broadcast: { replay: options } })
  const all = await replayed(ada, topic, replay({ since, limit: 10 }), shout(10, topic))
  const none = await replayed(bob, topic, { private: true }, shout(11, topic))
  const limited = await replayed(bob, `${topic}:2`, replay({ since, limit: 2 }), shout(12, `${topic}:2`))
  const presenceOnly = await joined(wes.channel(topic, {
    config: { private: true, presence: { enabled: true }, broadcast: { replay: { since } } },
  }))

  let publicThrown = null
  try {
    ada.channel('room:public', { config: { broadcast: { replay: { since } } } })
  } catch (error) {
    publicThrown = error.message
  }
  console.log(JSON.stringify({ all, none, limited, presenceOnly, publicThrown }))
  for (const sb of [ada, bob, wes]) await sb.removeAllChannels()
  process.exit(0)
} catch (error) {
  console.error(error.stack || String(error))
  process.exit(1)
}
