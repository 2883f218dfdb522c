-- A person the device recognised as coming back within its return window names their
-- earlier event; NULL for a first visit (and for every event of agents that predate it).
ALTER TABLE person_events ADD COLUMN IF NOT EXISTS return_of uuid;
