-- The W3C trace context of the consumer span that recorded the notification, so that its
-- deliveries (however much later, by whichever replica) continue the order's trace and the
-- webhook receiver gets a `traceparent` within it.
ALTER TABLE notifications ADD COLUMN traceparent text;
