// supabase-js (postgrest-js) against the local stack: what an ordinary app's data calls send —
// embedding with !inner and referenced-table order/limit, array and full-text operators, an `or`
// with braces, CSV — printed as one JSON line. Exits non-zero on any error.
import { createClient } from '@supabase/supabase-js'

const supabase = createClient(process.env.SUPABASE_URL, process.env.SUPABASE_SERVICE_ROLE_KEY)
const out = {}
async function run(name, query) {
  const { data, error } = await query
  if (error) throw new Error(`${name}: ${JSON.stringify(error)}`)
  out[name] = data
}

try {
  await run('inner', supabase.from('sections').select('name, instruments!inner(name)').eq('instruments.name', 'flute'))
  await run('referenced', supabase.from('sections').select('name, instruments(name)').order('id')
    .order('name', { referencedTable: 'instruments', ascending: false }).limit(1, { referencedTable: 'instruments' }))
  await run('many', supabase.from('instruments').select('name, section:sections(name)').eq('id', 1).single())
  await run('textSearch', supabase.from('sections').select('id').textSearch('name', 'wood:*', { config: 'english' }))
  await run('websearch', supabase.from('sections').select('id').textSearch('name', 'strings or percussion', { type: 'websearch' }).order('id'))
  await run('contains', supabase.from('sections').select('id').contains('tags', ['loud']).order('id'))
  await run('overlaps', supabase.from('sections').select('id').overlaps('tags', ['bowed', 'blown']).order('id'))
  await run('or', supabase.from('sections').select('id').or('tags.cs.{bowed,quiet},id.eq.3').order('id'))
  await run('csv', supabase.from('sections').select('id,name').order('id').csv())
  console.log(JSON.stringify(out))
  process.exit(0)
} catch (error) {
  console.error(error.stack || String(error))
  process.exit(1)
}
