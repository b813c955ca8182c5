-- Version 8. Never edit a released migration: add the next one.
-- The worker process a running attempt was leased to (WorkerHello's
-- incarnation_id; '' when the worker sent none): a worker restarted under the
-- same id tells its predecessor's leases from its own (Dispatcher.connect).
ALTER TABLE jobs ADD COLUMN worker_incarnation TEXT NOT NULL DEFAULT '';
