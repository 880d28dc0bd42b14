"""reactor: a background-job worker for Supabase."""
