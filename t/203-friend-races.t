# Friend service under concurrency (API.md 4.8): requests that cross, many
# answers to one request, answers racing a cancel.  The database decides:
# one live friendship per pair, one winner per pending request.

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use Test::Nginx::Chat;
use ChatStack;
use POSIX ();
use Time::HiRes qw(time sleep);

our $Secret = $ENV{TEST_NGINX_JWT_SECRET} // 'change-me-nginx-chat-secret';

our $Exists = '{"detail":"Friendship already exists or pending"}';
our $Gone = '{"detail":"Friend request not found or already processed"}';

# $n users rows in one statement; returns [{ id, token }] by ascending id
sub new_users {
    my ($n) = @_;
    my $prefix = unique_name('fx');
    my $values = join ', ', map {
        "('$prefix-$_\@example.com', 'x', '$prefix-$_', 0, 1, "
        . "UTC_TIMESTAMP(), UTC_TIMESTAMP())"
    } 1 .. $n;
    sql("INSERT INTO users (email, password_hash, username, is_online, "
        . "is_active, created_at, updated_at) VALUES $values");
    my @rows = split /\n/, sql("SELECT id, username FROM users "
                               . "WHERE username LIKE '$prefix-%' "
                               . "ORDER BY id");
    die "expected $n users, got " . @rows . "\n" unless @rows == $n;
    return [map {
        my ($id, $name) = split /\t/;
        +{ id => $id,
           name => $name,
            token => make_jwt({ alg => 'HS256', typ => 'JWT' },
                             { sub => "$id", email => "u$id\@example.com",
                               type => 'access',
                               exp => CORE::time() + 3600 },
                             $Secret) }
    } @rows];
}

my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(),
    config      => 'location /api/friends { chat_friend; }',
);

# every job [method, path, user, body] in its own process; they all wait
# on one pipe and go when it closes; returns [{ status, body }] in order
sub at_once {
    my (@jobs) = @_;
    my @kids;

    pipe(my $go_r, my $go_w) or die "pipe: $!";

    for my $job (@jobs) {
        my ($method, $path, $user, $body) = @$job;
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";

        if ($pid == 0) {
            close $r;
            close $go_w;
            sysread($go_r, my $byte, 1);
            my $res = http_request($method, $ngx->url($path),
                                   { Authorization => "Bearer $user->{token}",
                                     'Content-Type' => 'application/json' },
                                   $body, 15);
            print {$w} json_encode({ status => $res->{status} // 0,
                                     body => $res->{body} // '' });
            close $w;
            POSIX::_exit(0);
        }

        close $w;
        push @kids, [$pid, $r];
    }

    close $go_r;
    close $go_w;

    my @results;

    for my $kid (@kids) {
        my ($pid, $fh) = @$kid;
        local $/;
        my $out = <$fh>;
        close $fh;
        waitpid($pid, 0);
        push @results, json_decode($out // '') // { status => 0, body => '' };
    }

    return @results;
}

# one request now, in this process
sub call {
    my ($method, $path, $user, $body) = @{ $_[0] };
    my $res = http_request($method, $ngx->url($path),
                           { Authorization => "Bearer $user->{token}",
                             'Content-Type' => 'application/json' },
                           $body, 15);
    return { status => $res->{status} // 0, body => $res->{body} // '' };
}

sub statuses {
    my (@results) = @_;
    my %n;
    $n{$_->{status}}++ for @results;
    return join ' ', map { "$_:$n{$_}" } sort keys %n;
}

# live rows per unordered pair among these users: "low-high count" lines
sub live_pairs {
    my ($users) = @_;
    my $ids = join ',', map { $_->{id} } @$users;
    return split /\n/, sql("SELECT CONCAT(LEAST(user_id_1, user_id_2), '-', "
        . "GREATEST(user_id_1, user_id_2), ' ', COUNT(*)) FROM friendships "
        . "WHERE user_id_1 IN ($ids) AND user_id_2 IN ($ids) "
        . "AND deleted_at IS NULL GROUP BY LEAST(user_id_1, user_id_2), "
        . "GREATEST(user_id_1, user_id_2)");
}

sub send_request {
    my ($from, $to) = @_;
    return [POST => '/api/friends/request', $from,
            "{\"user_id_2\":$to->{id}}"];
}

sub answer {
    my ($by, $requester, $action) = @_;
    return [PUT => "/api/friends/status/$requester->{id}", $by,
            "{\"action\":\"$action\"}"];
}

sub cancel {
    my ($by, $target) = @_;
    return [DELETE => "/api/friends/request/$target->{id}", $by];
}

# the stream's last entry before this file ran: older ones are not ours
our $Mark = (split /\n/, redis_cmd('XREVRANGE', 'friend.events', '+', '-',
                                   'COUNT', '1'))[0] // '0-0';

# events of this file between two users (names are unique), by type
sub events_between {
    my ($requester, $addressee, $type) = @_;
    my $n = 0;

    for my $e (stream_entries('XRANGE', 'friend.events', "($Mark", '+')) {
        $n++ if ($e->[1]{value} // '') =~ /"requester_name": "\Q$requester->{name}\E", .*"addressee_name": "\Q$addressee->{name}\E", "__event_type__": "$type"/;
    }

    return $n;
}


# --- A -> B and B -> A at the same moment, 20 pairs: one relationship each

{
    my $users = new_users(40);
    my ($created, $refused, $other) = (0, 0, 0);
    my @want;

    for my $i (0 .. 19) {
        my ($u, $v) = @$users[2 * $i, 2 * $i + 1];
        my @res = at_once(send_request($u, $v), send_request($v, $u));

        for my $res (@res) {
            if ($res->{status} == 201) {
                $created++;
            } elsif ($res->{status} == 400 && $res->{body} eq $Exists) {
                $refused++;
            } else {
                $other++;
                diag("pair $i: $res->{status} $res->{body}");
            }
        }

        push @want, "$u->{id}-$v->{id} 1";
    }

    is($created, 20, 'crossing requests: one 201 per pair');
    is($refused, 20, 'crossing requests: the other one a 400 "exists"');
    is($other, 0, 'crossing requests: no other answer');
    is_deeply([sort(live_pairs($users))], [sort @want],
              'crossing requests: exactly one live row for each pair');
}


# --- ten users asking each other all at once: 90 requests, 45 pairs

{
    my $users = new_users(10);
    my (@jobs, @want);

    for my $u (@$users) {
        push @jobs, map { send_request($u, $_) } grep { $_ != $u } @$users;
    }

    for my $i (0 .. 9) {
        push @want, map { "$users->[$i]{id}-$users->[$_]{id} 1" } $i + 1 .. 9;
    }

    my @res = at_once(@jobs);
    my $created = grep { $_->{status} == 201 } @res;
    my $refused = grep { $_->{status} == 400 && $_->{body} eq $Exists } @res;

    is($created, 45, 'mesh: one request created per pair');
    is($refused, 45, 'mesh: every other one refused');
    is_deeply([sort(live_pairs($users))], [sort @want],
              'mesh: exactly one live row for each of the 45 pairs');

    # each one sees all nine others in its lists, received or sent
    my @lists = at_once(map { [GET => '/api/friends/requests', $_] } @$users);
    my $wrong = 0;
    for my $list (@lists) {
        my $doc = json_decode($list->{body}) // {};
        my $n = @{ $doc->{received_requests} // [] }
              + @{ $doc->{sent_requests} // [] };
        $wrong++ unless $list->{status} == 200 && $n == 9;
    }
    is($wrong, 0, 'mesh: everybody has nine pending requests listed');
}


# --- ten accepts of the same request: exactly one wins; three rounds

{
    my $users = new_users(6);

    for my $round (0 .. 2) {
        my ($u, $v) = @$users[2 * $round, 2 * $round + 1];
        my $res = call(send_request($u, $v));
        is($res->{status}, 201, "accept race $round: request sent");

        my @res = at_once(map { answer($v, $u, 'accept') } 1 .. 10);
        my @won = grep { $_->{status} == 200 } @res;
        my $lost = grep { $_->{status} == 400 && $_->{body} eq $Gone } @res;

        is(scalar @won, 1, "accept race $round: one 200")
            or diag(statuses(@res));
        is($lost, 9, "accept race $round: nine 400 \"already processed\"");
        like($won[0]{body} // '', qr/"status":"accepted"/,
             "accept race $round: the winner says accepted");

        my $id = sql("SELECT id FROM friendships WHERE user_id_1 = $u->{id} "
                     . "AND user_id_2 = $v->{id} AND status = 'accepted' "
                     . "AND deleted_at IS NULL");
        like($id, qr/^\d+$/, "accept race $round: one accepted row");

        sleep 0.2;
        is(events_between($u, $v, 'FriendRequestAccepted'), 1,
           "accept race $round: one FriendRequestAccepted");
    }
}


# --- accept, reject and cancel of one request at once: one of them wins
# and the row says which

{
    my $users = new_users(20);
    my (%wins, @want, @pairs);
    my $bad = 0;

    for my $round (0 .. 9) {
        my ($u, $v) = @$users[2 * $round, 2 * $round + 1];
        my $res = call(send_request($u, $v));
        $bad++, next unless $res->{status} == 201;

        my @res = at_once((answer($v, $u, 'accept')) x 3,
                          (answer($v, $u, 'reject')) x 3,
                          (cancel($u, $v)) x 3);

        my @won = grep { $res[$_]{status} == 200 } 0 .. $#res;
        my $lost = grep { $_->{status} == 400 && $_->{body} eq $Gone } @res;

        unless (@won == 1 && $lost == 8) {
            $bad++;
            diag("answer race $round: " . statuses(@res));
            next;
        }

        my $winner = $won[0] < 3 ? 'accept' : $won[0] < 6 ? 'reject'
                                            : 'cancel';
        $wins{$winner}++;
        push @pairs, "($u->{id}, $v->{id})";
        push @want, "$u->{id} "
                    . ($winner eq 'accept' ? "accepted 1" : "pending 0");
    }

    is($bad, 0, 'answer races: one winner each time');

    my @rows = split /\n/, sql("SELECT CONCAT(user_id_1, ' ', status, ' ', "
        . "deleted_at IS NULL) FROM friendships "
        . "WHERE (user_id_1, user_id_2) IN (" . join(', ', @pairs) . ") "
        . "ORDER BY user_id_1");
    is_deeply(\@rows, \@want, 'answer races: each row agrees with its winner');
    Test::More::note('winners: ' . join ', ',
                     map { "$_ $wins{$_}" } sort keys %wins);
}


# --- nothing went wrong inside nginx meanwhile

{
    my $log = $ngx->read_error_log(0) // '';

    # a slow first connect (valgrind) is the datastore's story, not ours
    my @bad = grep { /\[(?:alert|crit|emerg|error)\]/
                     && !/chat mysql: connect to .* timed out/ }
              split /\n/, $log;
    is(scalar @bad, 0, 'no errors logged under concurrency')
        or diag(join "\n", @bad[0 .. ($#bad > 4 ? 4 : $#bad)]);
}

stop_nginx($ngx);


# --- the block format against the same database: a pair that raced is
# one friendship for both of its users

{
    my $users = new_users(2);
    my ($u, $v) = @$users;
    $ENV{TEST_NGINX_RA} = $u->{id};
    $ENV{TEST_NGINX_RB} = $v->{id};
    $ENV{TEST_NGINX_RA_TOKEN} = $u->{token};
    $ENV{TEST_NGINX_RB_TOKEN} = $v->{token};
}

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: crossing requests through the main instance: one 201
--- config
location /api/friends { chat_friend; }
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_RB}}",
 "POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_RA}}"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_RA_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_RB_TOKEN}"]
--- error_code eval
[201, 400]



=== TEST 2: one pending request, seen from both sides
--- request eval
["GET /api/friends/requests", "GET /api/friends/requests"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_RA_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_RB_TOKEN}"]
--- error_code eval
[200, 200]
--- response_body_like eval
["^\\{\"received_requests\":\\[\\],\"sent_requests\":\\[\\{\"friendship_id\":\\d+,\"user_id\":$ENV{TEST_NGINX_RB},[^{]*\\}\\]\\}\$",
 "^\\{\"received_requests\":\\[\\{\"friendship_id\":\\d+,\"user_id\":$ENV{TEST_NGINX_RA},[^{]*\\}\\],\"sent_requests\":\\[\\]\\}\$"]
