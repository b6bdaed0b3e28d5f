# Presence of friends (N5): log in, log out and the expiry of the presence
# key each give one "presence" event, without an id line, on every
# notification stream of each accepted friend, on two nginx sharing the
# datastores, within a second; a pending friend and a stranger get
# nothing.  GET /api/friends/online: the accepted friends whose presence
# key exists, ascending id, in the contract's shape.  While MariaDB is
# unavailable a presence waits and then goes out.  With blocking in the
# schema (F9), a blocked friend gets nothing either.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use JSON::PP ();
use Time::HiRes qw(time sleep);

my $config = <<'EOF';
location /api/auth          { chat_user; }
location /api/friends       { chat_friend; }
location /api/notifications { chat_notify; }
EOF

# a consumer group of this file's own, and so channels of its own
my $group = "notifications_t$$";

my @nodes = chat_nodes(2, $config,
                       http => "chat_notify_consumer on;\n"
                               . "chat_notify_group $group;\n");

my ($na, $nb) = @nodes;

$ChatStack::Base = $na->url('');

# api() and the helpers built on it through a given node
sub on {
    my ($node, $code) = @_;
    local $ChatStack::Base = $node->url('');
    return $code->();
}

my %u = map { $_ => register_user() } qw(alice bob carol dave erin frank);
my %t = map { $_ => login_user($u{$_}) } keys %u;

# alice's accepted friends: bob, erin, frank; carol's request is pending;
# dave is a stranger
sub befriend {
    my ($from, $to, $accept) = @_;
    my ($st) = api(POST => '/api/friends/request', $t{$from},
                   { user_id_2 => $u{$to}{id} });
    is($st, 201, "$from asks $to");
    return unless $accept;
    ($st) = api(PUT => "/api/friends/status/$u{$from}{id}", $t{$to},
                { action => 'accept' });
    is($st, 200, "$to accepts");
}

befriend('alice', 'bob', 1);
befriend('erin', 'alice', 1);
befriend('alice', 'frank', 1);
befriend('carol', 'alice', 0);

sub stream {
    my ($node, $who) = @_;
    my $s = sse_open("/api/notifications/stream?access_token=$t{$who}", {},
                     $node->port);
    my $ev = $s->read_event(2);
    is($ev && $ev->{event}, 'connected', "$who: stream connected");
    return $s;
}

# the "presence" events a stream has now
sub presences {
    my ($s) = @_;
    return grep { ($_->{event} // '') eq 'presence' } $s->poll_events;
}

# waits up to $secs for the first presence event on each stream
sub first_presence {
    my ($secs, @streams) = @_;
    my $deadline = time() + $secs;
    my @got;
    for my $s (@streams) {
        my $ev;
        while (!$ev && (my $left = $deadline - time()) > 0) {
            my $e = $s->read_event($left) or last;
            $ev = $e if $e->{event} eq 'presence';
        }
        push @got, $ev;
    }
    return @got;
}

sub check_presence {
    my ($ev, $what, $online) = @_;
    ok($ev, "$what: presence");
    ok(!exists(($ev // {})->{id}), "$what: no id line");
    my $d = json_decode(($ev // {})->{data}) // {};
    is($d->{user_id}, $u{alice}{id}, "$what: user_id");
    is($d->{username}, $u{alice}{username}, "$what: username");
    ok(JSON::PP::is_bool($d->{is_online}) && !!$d->{is_online} == !!$online,
       "$what: is_online " . ($online ? 'true' : 'false'));
    like($d->{timestamp} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/,
         "$what: timestamp");
    if ($online) {
        ok(exists $d->{last_seen_at}, "$what: last_seen_at");
    } else {
        like($d->{last_seen_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/,
             "$what: last_seen_at");
    }
    is_deeply([sort keys %$d],
              [sort qw(user_id username is_online last_seen_at timestamp)],
              "$what: the contract's fields");
}

# bob on both nginx, erin on B; carol (pending) and dave (stranger)
my %s = (bob_a => stream($na, 'bob'), bob_b => stream($nb, 'bob'),
         erin_b => stream($nb, 'erin'), carol => stream($na, 'carol'),
         dave => stream($nb, 'dave'));
my @friends = qw(bob_a bob_b erin_b);

sleep 0.3;
presences($_) for values %s;

# log in (node A)
{
    my $t0 = time();
    my $tok = on($na, sub { login_user($u{alice}) });
    my @got = first_presence(1, @s{@friends});
    my $spent = time() - $t0;

    diag(sprintf('log in: presence on 3 streams, 2 nginx, %.0f ms after '
                 . 'the request', 1000 * $spent));
    check_presence($got[$_], "log in, $friends[$_]", 1) for 0 .. $#friends;
    cmp_ok($spent, '<', 1.5, 'all within a second of the response');

    sleep 0.5;
    is(scalar(presences($s{$_})), 0, "log in: $_ gets nothing else")
        for @friends, qw(carol dave);

    $t{alice} = $tok;
}

# GET /api/friends/online (friend service)
{
    my ($st, $list) = api(GET => '/api/friends/online', $t{bob});
    is($st, 200, 'online friends of bob: 200');
    is_deeply($list, [ { user_id => $u{alice}{id},
                         username => $u{alice}{username},
                         is_online => JSON::PP::true(),
                         last_seen_at => $list->[0]{last_seen_at} } ],
              'bob: alice, in the contract\'s shape');

    # alice's friends: bob, erin, frank are online (logged in above), carol
    # is pending, dave a stranger; frank's key goes
    redis_cmd('DEL', "user:online:$u{frank}{id}");
    ($st, $list) = api(GET => '/api/friends/online', $t{alice});
    is($st, 200, 'online friends of alice: 200');
    is_deeply([map { $_->{user_id} } @$list],
              [sort { $a <=> $b } $u{bob}{id}, $u{erin}{id}],
              'accepted and online only, ascending id');
    ok(!(grep { !JSON::PP::is_bool($_->{is_online}) || !$_->{is_online} }
         @$list), 'is_online true');

    ($st, $list) = api(GET => '/api/friends/online', $t{dave});
    is_deeply([$st, $list], [200, []], 'no friends: []');

    ($st) = api(GET => '/api/friends/online', undef);
    is($st, 401, 'no token: 401');
}

# log out (node B)
{
    my $t0 = time();
    my ($st) = on($nb, sub { api(POST => '/api/auth/logout', $t{alice}) });
    is($st, 200, 'alice logs out on node B');
    my @got = first_presence(1, @s{@friends});
    my $spent = time() - $t0;

    diag(sprintf('log out: presence on 3 streams, 2 nginx, %.0f ms after '
                 . 'the request', 1000 * $spent));
    check_presence($got[$_], "log out, $friends[$_]", 0) for 0 .. $#friends;
    cmp_ok($spent, '<', 1.5, 'all within a second of the response');

    sleep 0.5;
    is(scalar(presences($s{$_})), 0, "log out: $_ gets nothing else")
        for @friends, qw(carol dave);

    my ($st2, $list) = api(GET => '/api/friends/online', $t{bob});
    is_deeply([$st2, $list], [200, []], 'bob: nobody online now');
}

# the presence key expires: one event, from one of the nodes
{
    $t{alice} = on($nb, sub { login_user($u{alice}) });
    first_presence(1, @s{@friends});
    sleep 0.3;
    presences($_) for values %s;

    my $t0 = time();
    redis_cmd('PEXPIRE', "user:online:$u{alice}{id}", 50);
    my @got = first_presence(3, @s{@friends});
    diag(sprintf('expiry: presence on 3 streams %.0f ms after PEXPIRE 50',
                 1000 * (time() - $t0)));
    check_presence($got[$_], "expiry, $friends[$_]", 0) for 0 .. $#friends;
    cmp_ok(time() - $t0, '<', 3, 'within the expiry\'s processing');

    sleep 1;
    is(scalar(presences($s{$_})), 0, "expiry: $_ gets one only")
        for @friends, qw(carol dave);

    my $n = redis_cmd('XLEN', 'user.online_status');
    like($n, qr/^\d+$/, 'presence events are on user.online_status');
}

# MariaDB unavailable: GET /api/friends/online answers a JSON 503; an
# event stays pending and its presence goes out once MariaDB is back
{
    presences($_) for values %s;

    # the call waits out MariaDB's timeout (longer under valgrind)
    my $wait = $ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 10;

    freeze('mariadb');
    my $res = http_request(GET => $na->url('/api/friends/online'),
                           { Authorization => "Bearer $t{bob}" }, undef,
                           $wait);
    is($res->{status}, 503, 'online friends, MariaDB frozen: 503');
    ok(ref json_decode($res->{body}) eq 'HASH', '... JSON');

    my $value = '{"timestamp": "2026-02-25T03:12:03.481220", '
        . "\"user_id\": $u{alice}{id}, \"is_online\": true, "
        . '"__event_type__": "UserOnlineStatusChanged"}';
    my $id = redis_cmd('XADD', 'user.online_status', '*', 'key',
                       $u{alice}{id}, 'value', $value);
    like($id, qr/^\d+-\d+$/, 'an event while MariaDB is frozen');
    sleep 1;
    is(scalar(presences($s{bob_a})), 0, '... no presence meanwhile');
    thaw('mariadb');

    my ($ev) = first_presence($wait, $s{bob_a});
    ok($ev, '... it goes out once MariaDB is back');
    is((json_decode(($ev // {})->{data}) // {})->{timestamp},
       '2026-02-25T03:12:03.481220', '... with the time of the change');
}

# blocking (F9), where the schema has it: a block ends the friendship, so
# the blocked friend is told nothing
SKIP: {
    my $has = mysql_cmd("SHOW TABLES LIKE 'block_users'") // '';
    skip 'no block_users table (F9) in this schema', 3
        unless $has =~ /block_users/;

    my ($st) = api(POST => '/api/friends/block', $t{bob},
                   { blocked_user_id => $u{alice}{id} });
    ok($st == 200 || $st == 201, 'bob blocks alice');

    # what earlier steps sent is read first
    sleep 0.5;
    presences($_) for values %s;

    on($na, sub { login_user($u{alice}) });
    sleep 1.2;
    is(scalar(presences($s{bob_a})) + scalar(presences($s{bob_b})), 0,
       'the blocked pair: bob gets nothing');
    is(scalar(grep { json_decode($_->{data})->{user_id} == $u{alice}{id} }
              presences($s{erin_b})) > 0 ? 1 : 0, 1,
       '... erin still does');
}

$_->close for values %s;

stop_nginx(@nodes);

done_testing();
