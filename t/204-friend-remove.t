# Removing a friend (API.md 12, F8): DELETE /api/friends/{friend_user_id}
# soft-deletes the accepted friendship of the pair, either direction, and
# publishes FriendDeleted; every error with its exact body; the route
# beside F5's DELETE /api/friends/request/{id}; the room and its messages
# stay; a new request may follow; two removals at once, one from each
# side: exactly one succeeds.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(sleep);

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(),
    config      => "location /api/friends { chat_friend; }\n"
                   . "location /api/chat-rooms { chat_msg; }\n"
                   . "location /api/messages { chat_msg; }\n");

$ChatStack::Base = $ngx->url('');

# the stream's last entry before this file ran: older ones are not ours
my $mark = stream_mark('friend.events');

# this file's entries of friend.events of a type: [key, decoded value]
sub events {
    my ($type) = @_;
    return events_since('friend.events', $mark, $type);
}

sub befriend {
    my ($from, $to) = @_;
    my ($st) = api(POST => '/api/friends/request', $from->{token},
                   { user_id_2 => 0 + $to->{id} });
    die "request: $st\n" unless $st == 201;
    ($st) = api(PUT => "/api/friends/status/$from->{id}", $to->{token},
                { action => 'accept' });
    die "accept: $st\n" unless $st == 200;
}

sub friend_ids {
    my ($who) = @_;
    my ($st, $list) = api(GET => '/api/friends/list', $who->{token});
    return $st == 200 ? join(',', map { $_->{user_id} } @$list) : "status $st";
}

my ($a, $b, $c) = map { token_user('rm') } 1 .. 3;


# --- errors

my ($st, $body, $res) = api(DELETE => "/api/friends/$b->{id}");
is($st, 401, 'no token: 401');
is($res->{body}, '{"detail":"Not authenticated"}', '... the contract body');

($st, $body) = api(DELETE => '/api/friends/abc', $a->{token});
is($st, 422, 'friend_user_id not an integer: 422');
is_deeply($body->{detail}[0]{loc}, ['path', 'friend_user_id'],
          '... E-C at the path parameter');
is($body->{detail}[0]{type}, 'int_parsing', '... int_parsing');

for my $id (0, -4) {
    ($st, $body, $res) = api(DELETE => "/api/friends/$id", $a->{token});
    is($st, 422, "friend_user_id $id: 422");
    is($res->{body},
       '{"detail":{"error":"validation_error","message":"friend_user_id '
       . 'must be a positive integer","validation_errors":[{"field":'
       . '"friend_user_id","message":"Must be a positive integer","value":'
       . "$id}],\"status_code\":422}}",
       '... E-B\' with the value');
}

($st, $body, $res) = api(DELETE => "/api/friends/$b->{id}", $a->{token});
is($st, 404, 'no friendship: 404');
is($res->{body}, '{"detail":"Friendship not found"}', '... the contract body');

($st) = api(POST => '/api/friends/request', $a->{token},
            { user_id_2 => 0 + $c->{id} });
is($st, 201, 'A requests C');
($st, $body, $res) = api(DELETE => "/api/friends/$c->{id}", $a->{token});
is($st, 404, 'a pending request is no friendship: 404');
($st, $body, $res) = api(DELETE => "/api/friends/$a->{id}", $c->{token});
is($st, 404, '... from the other side either');
is(sql("SELECT COUNT(*) FROM friendships WHERE user_id_1 = $a->{id} "
       . "AND user_id_2 = $c->{id} AND deleted_at IS NULL"), 1,
   '... and the request is still pending');

($st, $body, $res) = api(DELETE => '/api/friends/999999999', $a->{token});
is($st, 404, 'an unknown user: 404');


# --- the route beside F5

($st, $body, $res) = api(DELETE => "/api/friends/request/$c->{id}",
                         $a->{token});
is($st, 200, 'DELETE /api/friends/request/{id} is still F5');
is($res->{body}, '{"message":"Friend request cancelled successfully",'
                 . "\"target_user_id\":$c->{id}}", '... its body');

($st, $body) = api(DELETE => '/api/friends/request', $a->{token});
is($st, 422, 'DELETE /api/friends/request: F8 with "request", 422');
is_deeply($body->{detail}[0]{loc}, ['path', 'friend_user_id'],
          '... at friend_user_id');

($st, $body, $res) = api(GET => "/api/friends/$b->{id}", $a->{token});
is($st, 405, 'GET /api/friends/{id}: 405');
is($res->{headers}{allow} // $res->{headers}{Allow}, 'DELETE',
   '... Allow: DELETE');


# --- success: the requester removes, the room stays

befriend($a, $b);

($st, my $room) = api(GET => "/api/chat-rooms/check/$b->{id}", $a->{token});
is($st, 200, 'a room of the friends');
($st) = api(POST => "/api/messages/$room->{id}", $b->{token},
            { content => 'before the removal' });
is($st, 201, '... with a message');

my $friendship = sql("SELECT id FROM friendships WHERE user_id_1 = $a->{id} "
                     . "AND user_id_2 = $b->{id} AND deleted_at IS NULL");

($st, $body, $res) = api(DELETE => "/api/friends/$b->{id}", $a->{token});
is($st, 200, 'A removes B: 200');
is($res->{body}, '{"message":"Friend removed successfully",'
                 . "\"friend_user_id\":$b->{id}}", '... the contract body');

is(sql("SELECT status, deleted_at IS NOT NULL, updated_at = deleted_at "
       . "FROM friendships WHERE id = $friendship"), "accepted\t1\t1",
   '... soft-deleted: deleted_at = updated_at, the status kept');
is(friend_ids($a), '', '... gone from A\'s list');
is(friend_ids($b), '', '... and from B\'s');

my @deleted;
for (1 .. 20) {
    @deleted = grep { $_->[1]{friendship_id} == $friendship }
               events('FriendDeleted');
    last if @deleted;
    sleep 0.1;
}
is(scalar @deleted, 1, 'one FriendDeleted');
is($deleted[0][0], $friendship, '... keyed by the friendship');
is_deeply([map { $deleted[0][1]{$_} } qw(friendship_id user_id friend_id)],
          [0 + $friendship, 0 + $a->{id}, 0 + $b->{id}],
          '... friendship_id, user_id (the caller), friend_id');
like($deleted[0][1]{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/,
     '... with its timestamp');

($st, $body, $res) = api(DELETE => "/api/friends/$b->{id}", $a->{token});
is($st, 404, 'removed again: 404');
($st, $body, $res) = api(DELETE => "/api/friends/$a->{id}", $b->{token});
is($st, 404, '... from the other side too');

($st, $body) = api(GET => "/api/chat-rooms/$room->{id}", $b->{token});
is($st, 200, 'the room stays');
($st, $body) = api(GET => "/api/messages/$room->{id}", $b->{token});
is($st, 200, '... and its messages');
is($body->{total_count}, 1, '... all of them');
($st) = api(POST => "/api/messages/$room->{id}", $a->{token},
            { content => 'after the removal' });
is($st, 201, '... and they may still chat (removing is no block)');


# --- a new request afterwards, and a removal by the addressee

($st) = api(POST => '/api/friends/request', $b->{token},
            { user_id_2 => 0 + $a->{id} });
is($st, 201, 'a new request after the removal: 201');
($st) = api(PUT => "/api/friends/status/$b->{id}", $a->{token},
            { action => 'accept' });
is($st, 200, '... accepted');
is(friend_ids($a), $b->{id}, '... friends again');

($st, $body) = api(DELETE => "/api/friends/$b->{id}", $a->{token});
is($st, 200, 'the addressee removes the requester: 200');
is(friend_ids($b), '', '... gone');


# --- both sides at once: one wins

my @rounds = map { [token_user('rm'), token_user('rm')] } 1 .. 5;
my %statuses;

for my $pair (@rounds) {
    my ($x, $y) = @$pair;
    befriend($x, $y);
    my @jobs = map {
        my ($me, $other) = @$_;
        fork_job(sub {
            my ($st) = api(DELETE => "/api/friends/$other->{id}",
                           $me->{token});
            return { status => $st };
        })
    } [$x, $y], [$y, $x];
    $statuses{join ' ', sort map { job_result($_)->{status} } @jobs}++;
}

is_deeply(\%statuses, { '200 404' => 5 },
          'removals from both sides at once: one 200, one 404 each time');

done_testing();
