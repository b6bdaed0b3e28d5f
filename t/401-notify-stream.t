# Notification service, the live side: events become notifications on the
# recipient's streams (N2) and in the list (N1) within a second, end to end
# through the friend and chat services as well; every stream of the user gets every
# event and nobody else's; "notifications_read" after N3; Last-Event-ID
# (header or argument) replays what is newer, ascending, at most 100,
# without duplicates between the replay and the live frames.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(time sleep);

my $config = <<'EOF';
location /api/auth          { chat_user; }
location /api/friends       { chat_friend; }
location /api/chat-rooms    { chat_msg; }
location /api/messages      { chat_msg; }
location /api/notifications { chat_notify; }
EOF

# a consumer group of this file's own: a consumer of the shared group (the
# stack's nginx) would store the notifications in another database
my $group = "notifications_t$$";

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config() . "chat_sse_keepalive 1s;\n"
                   . "chat_notify_consumer on;\n"
                   . "chat_notify_group $group;\n",
    config      => $config);

$ChatStack::Base = $ngx->url('');

# users nobody else has: notifications need no users row
my $A = 810000000 + int(rand(80000000));
my ($B, $C) = ($A + 1, $A + 2);
my %token = map { $_ => user_token($_) } $A, $B, $C;


my $friendship = 900000 + int(rand(100000));

# a FriendRequestSent to $to, as the friend service publishes it
sub request_event {
    my ($to, $from) = @_;
    $friendship++;
    my $value = "{\"timestamp\": \"2026-02-25T03:12:03.481220\", "
        . "\"friendship_id\": $friendship, \"requester_id\": $from, "
        . "\"requester_name\": \"u$from\", \"addressee_id\": $to, "
        . "\"addressee_name\": \"u$to\", "
        . "\"__event_type__\": \"FriendRequestSent\"}";
    my $id = redis_cmd('XADD', 'friend.events', '*', 'key', $friendship,
                       'value', $value);
    die "XADD: $id\n" unless $id =~ /^\d+-\d+$/;
    return notification_id('friend.events', $id);
}

sub stream {
    my ($user, %o) = @_;
    my %h = $o{query} ? () : (Authorization => "Bearer $token{$user}");
    $h{'Last-Event-ID'} = $o{last} if defined $o{last};
    my $path = '/api/notifications/stream';
    $path .= "?access_token=$token{$user}" if $o{query};
    $path .= ($o{query} ? '&' : '?') . "last_event_id=$o{arg}"
        if defined $o{arg};
    return sse_open($path, \%h, $ngx->port);
}

# the next event that is not a keep-alive
sub next_event {
    my ($s, $timeout) = @_;
    return $s->read_event($timeout // 2);
}

# N1 of a user; a busy MongoDB may need a second try
sub list {
    my ($user, $query) = @_;
    for (1 .. 3) {
        my ($st, $body) = api(GET => '/api/notifications' . ($query // ''),
                              $token{$user});
        return $body if $st == 200;
        sleep 0.5;
    }
    return { total_count => -1 };
}

# the group exists once a consumer is up
wait_group($group, 'friend.events');


# --- connected, then live notifications on every stream of the user

my @a = (stream($A), stream($A, query => 1));
my $b = stream($B);

for my $s (@a, $b) {
    is($s->status, 200, 'stream open');
    like($s->headers->{'content-type'}, qr{^text/event-stream}, 'SSE');
    is($s->headers->{'cache-control'}, 'no-cache', 'not cached');
    is($s->headers->{'x-accel-buffering'}, 'no', 'not buffered');
}

for my $s (@a) {
    my $ev = next_event($s);
    is($ev->{event}, 'connected', 'connected first');
    ok(!defined $ev->{id}, '... without an id');
    is($ev->{data}, '{"message": "Connected to notification stream", '
                    . "\"user_id\": $A, \"unread_count\": 0}",
       '... with the unread count, as json.dumps writes it');
}

is(json_decode(next_event($b)->{data})->{user_id}, $B, "B's connected");

my $t0 = time();
my $n1 = request_event($A, $B);

for my $i (0, 1) {
    my $ev = next_event($a[$i]);
    is($ev->{event}, 'notification', "stream $i: the notification");
    is($ev->{id}, $n1, "stream $i: its id on the id: line");
    like($ev->{data}, qr/^\{"id": "$n1", "user_id": $A, "type": "friend_request", "title": "New friend request", "body": "u$B sent you a friend request", "data": \{"friendship_id": $friendship, "requester_id": $B, "requester_username": "u$B"\}, "is_read": false, "read_at": null, "created_at": "[\d\-T:.]+"\}$/,
         "stream $i: the Notification object");
}

cmp_ok(time() - $t0, '<', 1, 'on both streams within a second');

{
    my $body = list($A);
    is($body->{total_count}, 1, 'N1 lists it');
    is($body->{notifications}[0]{id}, $n1, '... with the same id');
}

ok(!defined $b->read_event(0.5), "B's stream got nothing of A's");

# the NotificationCreated event
{
    my @e = split /\n/, redis_cmd('XREVRANGE', 'notification.events', '+',
                                  '-', 'COUNT', '5000');
    # a consumer of another group (the stack's) may publish its own
    my @v = grep { /"notification_id": "$n1"/ } @e;
    cmp_ok(scalar @v, '>=', 1, 'NotificationCreated');
    is(scalar(grep { !/^\{"timestamp": "[^"]+", "notification_id": "$n1", "user_id": $A, "type": "friend_request", "__event_type__": "NotificationCreated"\}$/ } @v),
       0, '... in the envelope of the other events');
}


# --- end to end through the friend service: F1 and F2 accept

{
    my $u1 = register_user();
    my $u2 = register_user();
    my $tok1 = login_user($u1);
    my $tok2 = login_user($u2);
    $token{$u1->{id}} = $tok1;
    $token{$u2->{id}} = $tok2;

    # a reused user id may have notifications already: counts are relative
    my ($before1, $before2) = map { list($_)->{total_count} }
                              $u1->{id}, $u2->{id};

    my $s1 = stream($u1->{id});
    my $s2 = stream($u2->{id});
    next_event($s1);
    next_event($s2);

    my ($st, $req) = api(POST => '/api/friends/request', $tok1,
                         { user_id_2 => $u2->{id} });
    is($st, 201, 'F1: request sent');
    my $t1 = time();

    my $ev = next_event($s2, 1);
    cmp_ok(time() - $t1, '<', 1, "the addressee's stream within a second");
    is($ev->{event}, 'notification', '... a notification');
    my $n = json_decode($ev->{data} // '{}');
    is($n->{type}, 'friend_request', '... friend_request');
    is($n->{body}, "$u1->{username} sent you a friend request",
       '... with the real username');
    is_deeply($n->{data}, { friendship_id => $req->{id},
                            requester_id => $u1->{id},
                            requester_username => $u1->{username} },
              '... and its data');

    my $body = list($u2->{id});
    is($body->{total_count}, $before2 + 1, 'N1 of the addressee has it');
    is($body->{notifications}[0]{id}, $ev->{id}, '... first');
    ok(!defined $s1->read_event(0.3), "nothing on the requester's stream");

    ($st) = api(PUT => "/api/friends/status/$u1->{id}", $tok2,
                { action => 'accept' });
    is($st, 200, 'F2: accepted');
    $t1 = time();

    $ev = next_event($s1, 1);
    cmp_ok(time() - $t1, '<', 1, "the requester's stream within a second");
    $n = json_decode($ev->{data} // '{}');
    is($n->{type}, 'friend_accepted', '... friend_accepted');
    is($n->{title}, 'Friend request accepted', '... its title');
    is($n->{body}, "$u2->{username} accepted your friend request",
       '... its body');
    is_deeply($n->{data}, { friendship_id => $req->{id},
                            addressee_id => $u2->{id},
                            addressee_username => $u2->{username} },
              '... and its data');
    is(list($u1->{id})->{total_count}, $before1 + 1,
       'N1 of the requester has it');

    # C4: the other member of the room is notified
    my $room;
    ($st, $room) = api(GET => "/api/chat-rooms/check/$u2->{id}", $tok1);
    is($st, 200, 'C2: the room of the two');
    ($st, my $msg) = api(POST => "/api/messages/$room->{id}", $tok1,
                         { content => "hello \x{2603} there" });
    is($st, 201, 'C4: a message sent');
    $t1 = time();

    $ev = next_event($s2, 1);
    cmp_ok(time() - $t1, '<', 1, "the other member's stream within a second");
    is($ev->{event}, 'notification', '... a notification');
    $n = json_decode($ev->{data} // '{}');
    is($n->{type}, 'new_message', '... new_message');
    is($n->{title}, 'New message', '... its title');
    is($n->{body}, "$u1->{username}: hello \x{2603} there", '... its body');
    is_deeply($n->{data}, { room_id => $room->{id},
                            message_id => $msg->{id},
                            sender_id => $u1->{id},
                            sender_username => $u1->{username},
                            preview => "hello \x{2603} there" },
              '... and its data');
    is(list($u2->{id})->{total_count}, $before2 + 2,
       'N1 of the other member has it');
    ok(!defined $s1->read_event(0.3), 'nothing for the sender');

    $s1->close;
    $s2->close;
}


# --- a message: the other member of the room is notified

{
    my $room = mysql_cmd("INSERT INTO chat_rooms (user_1_id, user_2_id, "
        . "created_at, updated_at) VALUES ($A, $C, UTC_TIMESTAMP(), "
        . "UTC_TIMESTAMP()); SELECT LAST_INSERT_ID()");
    my $c = stream($C);
    next_event($c);

    my $content = "h\x{e9}llo \x{1f600} " . ('y' x 200);
    my $value = '{"timestamp": "2026-02-25T03:12:03.481220", '
        . "\"message_id\": \"65dab0c3f1e2a4b5c6d7e8f9\", \"room_id\": $room, "
        . "\"user_id\": $A, \"username\": \"al\", \"content\": "
        . JSON::PP->new->ascii->encode($content)
        . ', "message_type": "text", "__event_type__": "MessageSent"}';
    my $t1 = time();
    my $entry = redis_cmd('XADD', 'message.events', '*', 'key', $room,
                          'value', $value);

    my $ev = next_event($c, 1);
    cmp_ok(time() - $t1, '<', 1, 'a message notification within a second');
    is($ev->{id}, notification_id('message.events', $entry),
       '... its id from the entry');
    my $n = json_decode($ev->{data} // '{}');
    my $preview = substr("h\x{e9}llo \x{1f600} " . ('y' x 200), 0, 100);
    is($n->{body}, "al: $preview", '... the first 100 characters');
    is_deeply($n->{data}, { room_id => 0 + $room,
                            message_id => '65dab0c3f1e2a4b5c6d7e8f9',
                            sender_id => $A, sender_username => 'al',
                            preview => $preview }, '... its data');
    like($ev->{data}, qr/"preview": "h\\u00e9llo \\ud83d\\ude00 y/,
         '... escaped as json.dumps does on the stream');
    ok(!defined $a[0]->read_event(0.3), 'nothing for the sender');

    # a message in a room that does not exist notifies nobody
    $value =~ s/"room_id": \d+/"room_id": 2000000000/;
    redis_cmd('XADD', 'message.events', '*', 'key', 1, 'value', $value);
    ok(!defined $c->read_event(0.5), 'no room, no notification');
    $c->close;
}


# --- N3: notifications_read to the user's streams only

{
    my ($st, $body) = api(POST => '/api/notifications/read', $token{$A},
                          { notification_ids => [$n1] });
    is($body->{read_count}, 1, 'N3: one marked');

    for my $i (0, 1) {
        my $ev = next_event($a[$i]);
        is($ev->{event}, 'notifications_read', "stream $i: notifications_read");
        ok(!defined $ev->{id}, "stream $i: no id");
        like($ev->{data}, qr/^\{"notification_ids": \["$n1"\], "read_count": 1, "unread_count": 0, "timestamp": "\d{4}-\d\d-\d\dT[\d:.]+"\}$/,
             "stream $i: its data");
    }

    ok(!defined $b->read_event(0.3), "B's stream got nothing");

    # B cannot mark A's: nothing is published
    ($st, $body) = api(POST => '/api/notifications/read', $token{$B},
                       { notification_ids => [$n1], all => JSON::PP::false });
    is($body->{read_count}, 0, "B marks none of A's");
    ok(!defined $a[0]->read_event(0.3), 'and A hears nothing of it');
}

# keep-alive comments come from the hub
{
    my $ev = $b->read_event(2, { comments => 1 });
    like($ev->{comment} // '', qr/^ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/,
         'keep-alive comment');
}

$_->close for @a, $b;


# --- Last-Event-ID: the newer ones, ascending, then live, no duplicates

{
    my @ids = map { my $id = request_event($A, $C); sleep 0.002; $id } 1 .. 4;

    my $until = time() + 5;
    sleep 0.05 until list($A)->{total_count} >= 5 || time() > $until;

    # stored is not yet published: let the live frames pass first
    sleep 0.3;

    my $s = stream($A, last => $ids[0]);
    my $ev = next_event($s);
    is($ev->{event}, 'connected', 'replay: connected first');
    is(json_decode($ev->{data})->{unread_count}, 4, '... 4 unread');

    my @got = map { next_event($s)->{id} // '' } 1 .. 3;
    is_deeply(\@got, [@ids[1 .. 3]], '... then the 3 newer, ascending');

    my $live = request_event($A, $C);
    $ev = next_event($s);
    is($ev->{id}, $live, '... then live ones');
    ok(!defined $s->read_event(0.5), '... and nothing twice');
    $s->close;

    # the argument, for EventSource's first connection
    $s = stream($A, query => 1, arg => $ids[2]);
    next_event($s);
    @got = map { next_event($s)->{id} // '' } 1 .. 2;
    is_deeply(\@got, [$ids[3], $live], 'last_event_id argument');
    ok(!defined $s->read_event(0.3), '... nothing more');
    $s->close;

    # unknown, malformed, or another user's: no replay
    for my $last ('0' x 24, 'nonsense', $ids[0]) {
        my $who = $last eq $ids[0] ? $B : $A;
        $s = stream($who, last => $last);
        is(next_event($s)->{event}, 'connected', "Last-Event-ID $last");
        ok(!defined $s->read_event(0.3), '... replays nothing');
        $s->close;
    }
}


# --- a replay is at most 100

{
    my $D = $A + 3;
    $token{$D} = user_token($D);
    my @ids = map { request_event($D, $A) } 1 .. 105;

    my $until = time() + 10;
    sleep 0.1 until list($D)->{total_count} >= 105 || time() > $until;

    my $s = stream($D, last => $ids[0]);
    is(json_decode(next_event($s)->{data})->{unread_count}, 105,
       '105 unread');
    my @got;
    while (my $ev = $s->read_event(0.5)) {
        push @got, $ev->{id} if ($ev->{event} // '') eq 'notification';
    }
    is(scalar @got, 100, 'a replay of 100');

    # stored order (created_at, then id), as N1 lists them newest first:
    # two workers store batches side by side, so it need not be the order
    # the events were produced in
    my @page = map { @{ list($D, "?limit=100&skip=$_")->{notifications}
                        // [] } } 0, 100;
    my @stored = reverse map { $_->{id} } @page;
    my ($at) = grep { $stored[$_] eq $ids[0] } 0 .. $#stored;
    is_deeply(\@got, [@stored[($at // 0) + 1 .. ($at // 0) + 100]],
              '... the oldest of the newer ones');
    $s->close;
}

is(join('', grep { /\[(alert|crit|emerg)\]/ }
            split /^/, $ngx->read_error_log(0)),
   '', 'no alert in the error log');

stop_nginx($ngx);

redis_cmd('XGROUP', 'DESTROY', $_, $group) for qw(friend.events message.events);

done_testing();
