# Blocks (API.md 12, F9): POST /api/friends/block, DELETE
# /api/friends/block/{blocked_user_id}, GET /api/friends/blocked, with
# every error and its exact body, idempotency and the events UserBlocked
# and UserUnblocked; then what a block does, asked by either side: the
# pair's friendships (pending and accepted) end, F1 403, C2 and C4 403
# while C1, C3 and C5 still read the history, U7 and F6 leave the other
# out, and the notification consumer makes no notification from one to
# the other; an unblock gives it all back.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(time sleep);

# a consumer group of this file's own: a consumer of the shared group (the
# stack's nginx) would store the notifications in another database
my $group = "notifications_t$$";

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config() . "chat_notify_consumer on;\n"
                   . "chat_notify_group $group;\n",
    config      => "location /api/friends { chat_friend; }\n"
                   . "location /api/chat-rooms { chat_msg; }\n"
                   . "location /api/messages { chat_msg; }\n"
                   . "location /api/users { chat_user; }\n"
                   . "location /api/notifications { chat_notify; }\n");

$ChatStack::Base = $ngx->url('');

my $until = time() + 5;
sleep 0.1 until time() > $until
    || redis_cmd('XINFO', 'GROUPS', 'message.events') =~ /^\Q$group\E$/m;

# users with a common part in their names, so one search finds them all
my $tag = unique_name('bk');
my $n = 0;

sub user {
    my ($id, $name) = sql_user("$tag-" . $n++);
    return { id => $id, name => $name, token => user_token($id) };
}

my $mark = stream_mark('friend.events');

# this file's entries of friend.events of a type: [key, decoded value]
sub events {
    my ($type) = @_;
    return events_since('friend.events', $mark, $type);
}

sub wait_event {
    my ($type, $match) = @_;
    for (1 .. 30) {
        my @found = grep { $match->($_->[1]) } events($type);
        return @found if @found;
        sleep 0.1;
    }
    return ();
}

sub block {
    my ($by, $whom, %more) = @_;
    return api(POST => '/api/friends/block', $by->{token},
               { blocked_user_id => 0 + $whom->{id}, %more });
}

sub live_friendships {
    my ($x, $y) = @_;
    return sql("SELECT COUNT(*) FROM friendships WHERE deleted_at IS NULL "
               . "AND ((user_id_1 = $x->{id} AND user_id_2 = $y->{id}) "
               . "OR (user_id_1 = $y->{id} AND user_id_2 = $x->{id}))");
}

# ids of the users a search by $who for this file's users returns
sub search {
    my ($who, $path) = @_;
    my ($st, $body) = api(GET => "$path?query=$tag&limit=50", $who->{token});
    return "status $st" unless $st == 200;
    return join ',', map { $_->{id} } @{ $body->{users} };
}

sub ids_but {
    my ($all, @not) = @_;
    my %not = map { $_->{id} => 1 } @not;
    return join ',', map { $_->{id} } grep { !$not{$_->{id}} } @$all;
}

# the notifications of $who from $from (sender_id or requester_id)
sub notifications_from {
    my ($who, $from) = @_;
    my ($st, $body) = api(GET => '/api/notifications?limit=100',
                          $who->{token});
    die "N1: $st\n" unless $st == 200;
    return grep {
        ($_->{data}{sender_id} // $_->{data}{requester_id}
         // $_->{data}{addressee_id} // 0) == $from->{id}
    } @{ $body->{notifications} };
}

# an event the way C4 and F1 produce it, for the consumer
sub add_event {
    my ($stream, $key, %fields) = @_;
    my $value = json_encode({ timestamp => '2026-02-25T03:12:03.481220',
                              %fields });
    my $id = redis_cmd('XADD', $stream, '*', 'key', $key, 'value', $value);
    die "XADD $stream: $id\n" unless $id =~ /^\d+-\d+$/;
    return notification_id($stream, $id);
}


my @all = map { user() } 1 .. 5;
my ($a, $b, $c, $d, $e) = @all;


# --- POST /api/friends/block: input

my ($st, $body, $res) = api(POST => '/api/friends/block', undef,
                            { blocked_user_id => 0 + $b->{id} });
is($st, 401, 'no token: 401');
is($res->{body}, '{"detail":"Not authenticated"}', '... the contract body');

($st, $body) = api(POST => '/api/friends/block', $a->{token}, '{"blocked');
is($st, 422, 'malformed JSON: 422');

($st, $body) = api(POST => '/api/friends/block', $a->{token}, {});
is($st, 422, 'blocked_user_id missing: 422');
is_deeply([$body->{detail}[0]{type}, $body->{detail}[0]{loc}],
          ['missing', ['body', 'blocked_user_id']], '... E-C missing');

($st, $body) = api(POST => '/api/friends/block', $a->{token},
                   { blocked_user_id => 'bob' });
is($st, 422, 'blocked_user_id not an integer: 422');
is($body->{detail}[0]{type}, 'int_parsing', '... int_parsing');

($st, $body) = block($a, $b, reason => 'x' x 201);
is($st, 422, 'a reason of 201 characters: 422');
is_deeply([$body->{detail}[0]{type}, $body->{detail}[0]{loc}],
          ['string_too_long', ['body', 'reason']], '... string_too_long');

($st, $body) = block($a, $b, reason => 5);
is($st, 422, 'a reason that is no string: 422');

($st, $body, $res) = block($a, $a);
is($st, 400, 'blocking oneself: 400');
is($res->{body}, '{"detail":"Cannot block yourself"}', '... the contract body');

for my $id (999999999, 0, -1) {
    ($st, $body, $res) = api(POST => '/api/friends/block', $a->{token},
                             { blocked_user_id => $id });
    is($st, 404, "blocking unknown user $id: 404");
    is($res->{body}, '{"detail":"Target user not found"}', '... the body');
}

# bad input of every kind: a JSON 4xx, never a 5xx
for my $case (
    [POST => '/api/friends/block', '{"blocked_user_id":1.5}'],
    [POST => '/api/friends/block', '{"blocked_user_id":true}'],
    [POST => '/api/friends/block', '{"blocked_user_id":null}'],
    [POST => '/api/friends/block', '{"blocked_user_id":1e30}'],
    [POST => '/api/friends/block', '{"blocked_user_id":99999999999}'],
    [POST => '/api/friends/block', '{"blocked_user_id":[1]}'],
    [POST => '/api/friends/block', '[]'],
    [POST => '/api/friends/block', '"x"'],
    [POST => '/api/friends/block',
     qq({"blocked_user_id":1,"reason":"\xff\xfe"})],
    [POST => '/api/friends/block',
     '{"blocked_user_id":"1 OR 1=1"}'],
    [DELETE => '/api/friends/block/99999999999999999999'],
    [DELETE => '/api/friends/block/1%20OR%201=1'],
    [DELETE => '/api/friends/block/12345678901'],
    [DELETE => '/api/friends/99999999999999999999'],
    [DELETE => "/api/friends/1';DROP%20TABLE%20block_users;--"],
    [DELETE => '/api/friends/12345678901'],
    [GET => '/api/friends/blocked?limit=x'],
) {
    my ($method, $path, $raw) = @$case;
    ($st, $body, $res) = api($method, $path, $a->{token}, $raw);
    ok($st >= 400 && $st < 500 && ref $body eq 'HASH'
       && exists $body->{detail}
       || ($method eq 'GET' && $st == 200),
       "$method $path " . ($raw // '') . ": a JSON 4xx ($st)");
}

is(sql("SELECT COUNT(*) FROM block_users WHERE user_id = $a->{id}"), 0,
   'nothing stored by the refused ones');


# --- before the block: A and B are friends with a room and a message, C
# has a pending request to A

($st) = api(POST => '/api/friends/request', $a->{token},
            { user_id_2 => 0 + $b->{id} });
($st) = api(PUT => "/api/friends/status/$a->{id}", $b->{token},
            { action => 'accept' });
is($st, 200, 'A and B are friends');
($st) = api(POST => '/api/friends/request', $c->{token},
            { user_id_2 => 0 + $a->{id} });
is($st, 201, 'C has asked A');

($st, my $room) = api(GET => "/api/chat-rooms/check/$a->{id}", $b->{token});
is($st, 200, 'the room of A and B');
($st, my $said) = api(POST => "/api/messages/$room->{id}", $b->{token},
                      { content => 'hello before' });
is($st, 201, '... a message in it');

my @from_b = ();
for (1 .. 50) {
    @from_b = notifications_from($a, $b);
    last if grep { $_->{type} eq 'new_message' } @from_b;
    sleep 0.1;
}
ok(scalar(grep { $_->{type} eq 'new_message' } @from_b),
   'before the block, B\'s message notified A');

is(search($c, '/api/users/search'), ids_but(\@all, $c),
   'U7 by C finds the others');


# --- the block

my $t0 = time();
($st, $body, $res) = block($a, $b, reason => 'enough');
is($st, 201, 'A blocks B: 201');
like($body->{id}, qr/^\d+$/, '... an id');
is_deeply([@$body{qw(user_id blocked_user_id)}], [0 + $a->{id}, 0 + $b->{id}],
          '... user_id the caller, blocked_user_id the other');
like($body->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/,
     '... created_at in whole seconds');
is(join(',', sort keys %$body), 'blocked_user_id,created_at,id,user_id',
   '... a BlockUser, nothing else');
my $blocked = $body;

($st, $body, $res) = block($a, $b);
is($st, 200, 'blocked again: 200');
is_deeply($body, $blocked, '... the same BlockUser');
is(sql("SELECT COUNT(*) FROM block_users WHERE user_id = $a->{id}"), 1,
   '... one row');

my @ev = wait_event('UserBlocked', sub {
    $_[0]{user_id} == $a->{id} && $_[0]{blocked_user_id} == $b->{id} });
is(scalar @ev, 1, 'one UserBlocked (none for the second block)');
is($ev[0][0], $a->{id}, '... keyed by the caller');
is(join(',', map { $_ } sort keys %{ $ev[0][1] }),
   '__event_type__,blocked_user_id,timestamp,user_id',
   '... timestamp, user_id, blocked_user_id');

is(live_friendships($a, $b), 0, 'the accepted friendship ended');
is(sql("SELECT COUNT(*) FROM friendships WHERE user_id_1 = $a->{id} "
       . "AND user_id_2 = $b->{id} AND status = 'accepted' "
       . "AND deleted_at IS NOT NULL AND updated_at = deleted_at"), 1,
   '... soft-deleted');
is(live_friendships($a, $c), 1, 'C\'s request to A is still there');

($st, $body) = block($a, $c);
is($st, 201, 'A blocks C');
is(live_friendships($a, $c), 0, '... C\'s pending request ended');
($st, $body) = api(GET => '/api/friends/requests', $a->{token});
is(scalar @{ $body->{received_requests} }, 0, '... A sees no request');

# C blocks D too: blocks of others are not A's
block($c, $d);

($st, $body) = api(GET => '/api/friends/blocked', $a->{token});
is($st, 200, 'GET /api/friends/blocked: 200');
is(join(',', map { $_->{blocked_user_id} } @$body), "$c->{id},$b->{id}",
   '... A\'s blocks, newest first');
is_deeply([@{ $body->[1] }{qw(id user_id blocked_user_id created_at)}],
          [@$blocked{qw(id user_id blocked_user_id created_at)}],
          '... the BlockUser fields');
is_deeply($body->[1]{blocked_user},
          { id => 0 + $b->{id}, username => $b->{name},
            display_name => undef, status_message => undef,
            is_online => JSON::PP::false(), last_seen_at => undef },
          '... blocked_user: the UserProfile');

($st, $body) = api(GET => '/api/friends/blocked', $b->{token});
is_deeply($body, [], 'the blocked side has no blocks of its own');
($st, $body) = api(GET => '/api/friends/blocked');
is($st, 401, '... and no token: 401');


# --- the effects, asked by either side

for my $pair ([$a, $b, 'the blocker'], [$b, $a, 'the blocked']) {
    my ($me, $other, $who) = @$pair;

    ($st, $body, $res) = api(POST => '/api/friends/request', $me->{token},
                             { user_id_2 => 0 + $other->{id} });
    is($st, 403, "F1 by $who: 403");
    is($res->{body}, '{"detail":"Cannot send friend request to this user"}',
       '... the contract body');

    ($st, $body, $res) = api(GET => "/api/chat-rooms/check/$other->{id}",
                             $me->{token});
    is($st, 403, "C2 by $who: 403");
    is($res->{body}, '{"detail":{"error":"authorization_error","message":'
                     . '"Cannot chat with this user","details":null,'
                     . '"status_code":403}}', '... the contract body');

    ($st, $body, $res) = api(POST => "/api/messages/$room->{id}", $me->{token},
                             { content => 'hello?' });
    is($st, 403, "C4 by $who: 403");
    is($res->{body}, '{"detail":{"error":"authorization_error","message":'
                     . '"Cannot chat with this user","details":null,'
                     . '"status_code":403}}', '... the same body');

    ($st, $body, $res) = api(POST => "/api/messages/$room->{id}/typing",
                             $me->{token}, { is_typing => \1 });
    is($st, 403, "C13 (typing) by $who: 403");
    is($res->{body}, '{"detail":{"error":"authorization_error","message":'
                     . '"Cannot chat with this user","details":null,'
                     . '"status_code":403}}', '... the same body');

    ($st, $body) = api(GET => '/api/chat-rooms', $me->{token});
    is($st, 200, "C1 by $who: 200");
    ok(scalar(grep { $_->{id} == $room->{id} } @$body), '... with the room');
    ($st, $body) = api(GET => "/api/chat-rooms/$room->{id}", $me->{token});
    is($st, 200, "C3 by $who: 200");
    ($st, $body) = api(GET => "/api/messages/$room->{id}", $me->{token});
    is($st, 200, "C5 by $who: 200");
    is(join(',', map { $_->{content} } @{ $body->{messages} }),
       'hello before', '... the history, nothing sent since');

    # (A has blocked C as well)
    my @out = ($me, $other, $me == $a ? $c : ());

    is(search($me, '/api/users/search'), ids_but(\@all, @out),
       "U7 by $who leaves the other out");
    is(search($me, '/api/friends/search'), ids_but(\@all, @out),
       "F6 by $who leaves the other out");
}

is(search($e, '/api/users/search'), ids_but(\@all, $e),
   'U7 by someone else still finds both');
is(search($e, '/api/friends/search'), ids_but(\@all, $e),
   'F6 by someone else too');

($st) = api(POST => '/api/friends/request', $d->{token},
            { user_id_2 => 0 + $a->{id} });
is($st, 201, 'A\'s block of B is nothing to D');

# events that reach the consumer all the same (accepted before the block,
# or made by hand): nobody is notified while the block lasts
my @quiet = (
    add_event('message.events', $room->{id}, message_id => $said->{id},
              room_id => 0 + $room->{id}, user_id => 0 + $b->{id},
              username => $b->{name}, content => 'late',
              message_type => 'text', __event_type__ => 'MessageSent'),
    add_event('message.events', $room->{id}, message_id => $said->{id},
              room_id => 0 + $room->{id}, user_id => 0 + $a->{id},
              username => $a->{name}, content => 'late too',
              message_type => 'text', __event_type__ => 'MessageSent'),
    add_event('friend.events', 1, friendship_id => 1,
              requester_id => 0 + $b->{id}, requester_name => $b->{name},
              addressee_id => 0 + $a->{id}, addressee_name => $a->{name},
              __event_type__ => 'FriendRequestSent'),
    add_event('friend.events', 2, friendship_id => 2,
              requester_id => 0 + $b->{id}, requester_name => $b->{name},
              addressee_id => 0 + $a->{id}, addressee_name => $a->{name},
              __event_type__ => 'FriendRequestAccepted'),
);

ok(group_settled($group), 'the consumer has settled every event');
my %made = map { $_->{id} => 1 }
           (notifications_from($a, $b), notifications_from($b, $a));
is(scalar(grep { $made{$_} } @quiet), 0,
   'no notification from either to the other while blocked');
like($ngx->read_error_log(0), qr/users $b->{id} and $a->{id} are blocked/,
     '... the consumer says why');


# --- unblock

($st, $body, $res) = api(DELETE => '/api/friends/block/abc', $a->{token});
is($st, 422, 'unblock: blocked_user_id not an integer: 422');
is_deeply($body->{detail}[0]{loc}, ['path', 'blocked_user_id'],
          '... E-C at the path parameter');
($st, $body, $res) = api(DELETE => '/api/friends/block/0', $a->{token});
is($st, 422, 'unblock 0: 422');
is($res->{body},
   '{"detail":{"error":"validation_error","message":"blocked_user_id must '
   . 'be a positive integer","validation_errors":[{"field":"blocked_user_id",'
   . '"message":"Must be a positive integer","value":0}],'
   . '"status_code":422}}', '... E-B\'');
($st) = api(DELETE => "/api/friends/block/$b->{id}");
is($st, 401, 'unblock without a token: 401');

($st, $body, $res) = api(DELETE => "/api/friends/block/$a->{id}",
                         $b->{token});
is($st, 404, 'the blocked side cannot lift the block: 404');
is($res->{body}, '{"detail":"Block not found"}', '... the contract body');

($st, $body, $res) = api(DELETE => "/api/friends/block/$b->{id}",
                         $a->{token});
is($st, 200, 'A unblocks B: 200');
is($res->{body}, '{"message":"User unblocked successfully",'
                 . "\"blocked_user_id\":$b->{id}}", '... the contract body');
($st, $body, $res) = api(DELETE => "/api/friends/block/$b->{id}",
                         $a->{token});
is($st, 404, 'unblocked again: 404');

@ev = wait_event('UserUnblocked', sub {
    $_[0]{user_id} == $a->{id} && $_[0]{blocked_user_id} == $b->{id} });
is(scalar @ev, 1, 'one UserUnblocked');
is($ev[0][0], $a->{id}, '... keyed by the caller');

($st, $body) = api(GET => '/api/friends/blocked', $a->{token});
is(join(',', map { $_->{blocked_user_id} } @$body), $c->{id},
   'the list keeps the other block');

# everything is back
is(search($a, '/api/users/search'), ids_but(\@all, $a, $c),
   'U7 by A finds B again');
is(search($b, '/api/friends/search'), ids_but(\@all, $b),
   'F6 by B finds A again');
($st, $body) = api(GET => "/api/chat-rooms/check/$a->{id}", $b->{token});
is($st, 200, 'C2: 200 again');
is($body->{id}, $room->{id}, '... the same room');
($st, $said) = api(POST => "/api/messages/$room->{id}", $b->{token},
                   { content => 'hello after' });
is($st, 201, 'C4: 201 again');
($st) = api(POST => "/api/messages/$room->{id}/typing", $b->{token});
is($st, 202, 'C13 (typing): 202 again');

my $after;
for (1 .. 50) {
    ($after) = grep { ($_->{data}{message_id} // '') eq $said->{id} }
               notifications_from($a, $b);
    last if $after;
    sleep 0.1;
}
ok($after, 'the message notifies A again');

($st, $body) = api(POST => '/api/friends/request', $b->{token},
                   { user_id_2 => 0 + $a->{id} });
is($st, 201, 'F1: 201 again');
is(live_friendships($a, $b), 1, '... a live request');

# a block by the other side ends that request too
($st) = block($b, $a);
is($st, 201, 'now B blocks A');
is(live_friendships($a, $b), 0, '... B\'s own pending request ended');
($st) = api(POST => '/api/friends/request', $a->{token},
            { user_id_2 => 0 + $b->{id} });
is($st, 403, '... and A cannot ask B');

done_testing();
