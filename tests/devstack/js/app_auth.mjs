// supabase-js (auth-js) against the local stack's /auth/v1: sign up, a wrong password, sign in,
// get the user, refresh, write a row as that user, sign out, and an anonymous sign-in, printed as
// one JSON line. Exits non-zero on any unexpected error.
import { createClient } from '@supabase/supabase-js'

const url = process.env.SUPABASE_URL
const key = process.env.SUPABASE_ANON_KEY
const email = process.env.EMAIL
const password = 'correct horse'
const client = () => createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false } })
const out = {}
function must({ data, error }, what) {
  if (error) throw new Error(`${what}: ${JSON.stringify(error)}`)
  return data
}

try {
  const signedUp = must(await client().auth.signUp({ email, password }), 'signUp')
  out.signUp = { user: signedUp.user, hasSession: !!signedUp.session }

  const supabase = client()
  const wrong = await supabase.auth.signInWithPassword({ email, password: 'wrong horse' })
  out.wrong = { name: wrong.error.name, status: wrong.error.status, code: wrong.error.code, message: wrong.error.message }
  const taken = await client().auth.signUp({ email, password })
  out.taken = { status: taken.error.status, code: taken.error.code }

  const signedIn = must(await supabase.auth.signInWithPassword({ email, password }), 'signInWithPassword')
  out.session = signedIn.session
  out.getUser = must(await supabase.auth.getUser(), 'getUser').user
  const refreshed = must(await supabase.auth.refreshSession(), 'refreshSession').session
  out.refreshed = { refreshToken: refreshed.refresh_token, userId: refreshed.user.id }
  out.inserted = must(await supabase.from('jobs').insert({ job_type: process.env.JOB_TYPE }).select('user_id').single(), 'insert')

  must(await supabase.auth.signOut(), 'signOut')
  out.afterSignOut = (await supabase.auth.getSession()).data.session
  const stale = await client().auth.refreshSession({ refresh_token: refreshed.refresh_token })
  out.stale = { status: stale.error.status, code: stale.error.code }

  const anonymous = must(await client().auth.signInAnonymously(), 'signInAnonymously')
  out.anonymous = { user: anonymous.user, accessToken: anonymous.session.access_token }
  console.log(JSON.stringify(out))
  process.exit(0)
} catch (error) {
  console.error(error.stack || String(error))
  process.exit(1)
}
