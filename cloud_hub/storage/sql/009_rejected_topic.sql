-- Dead letters of retained messages are kept once per topic and payload (the broker
-- replays a retained status at every hub start): the check looks them up by topic.
CREATE INDEX rejected_messages_topic ON rejected_messages (topic);
