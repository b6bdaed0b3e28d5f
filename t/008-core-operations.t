# Datastore operations of a request: the token's revocation check runs
# beside the first query of an early route and its verdict decides what
# happens to that query's result; a client that leaves while its request
# waits is logged as 499, its late result dropped, and the worker goes on.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my $ngx = start_nginx_with(
    workers     => 1,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(mysql_timeout => '2s',
                                    redis_timeout => '2s'),
    config      => 'location /api/ { chat_user; }'
                 . ' location /api/chat-rooms { chat_msg; }'
                 . ' location = /health { chat_health; }',
);

$ChatStack::Base = $ngx->url('');

my $user = register_user();
my $token = login_user($user);

sub me {
    my ($tok) = @_;
    my $t0 = time;
    my ($status, $body) = api(GET => '/api/profile/me', $tok);
    return ($status, $body, time - $t0);
}

# the valid token is served again (the worker recovered)
sub served_again {
    my ($name) = @_;
    my $ok = 0;
    for (1 .. 50) {
        my ($st) = me($token);
        last if $st == 200 && ($ok = 1);
        sleep 0.1;
    }
    ok($ok, $name);
}

sub log_since {
    my ($offset) = @_;
    return $ngx->read_error_log($offset);
}

my ($status, $body) = me($token);
is($status, 200, 'profile/me answers');
is($body->{id}, $user->{id}, '... with the caller');

# ---- the first query does not wait for the revocation check

{
    my $offset = $ngx->error_log_size;

    freeze('redis');
    my ($st, undef, $took) = me($token);
    thaw('redis');

    is($st, 503, 'Redis frozen: the token cannot be checked, 503');
    cmp_ok($took, '<', 3.5, "... within the Redis timeout ($took s)");

    my $log = log_since($offset);
    like($log, qr/chat mysql: done rc:0 .* rows:1/,
         "the user's row was read while Redis was frozen");
    like($log, qr/held for the token's verdict/,
         "... and its result waited for the verdict, then was dropped");
}

# ---- a revoked token: 401 at once, even while MariaDB hangs

{
    my $other = login_user($user);
    my ($st) = api(POST => '/api/auth/logout', $other);
    is($st, 200, 'logout revokes a token');

    freeze('mariadb');
    my ($st2, $b2, $took) = me($other);
    thaw('mariadb');

    is($st2, 401, 'revoked token while MariaDB hangs: 401');
    is($b2->{detail}, 'Not authenticated', '... in the contract shape');
    cmp_ok($took, '<', 1, "... without waiting for MariaDB ($took s)");

    served_again('the valid token is served again after SIGCONT');
}

# ---- an early route that answers before the verdict: the answer waits

{
    my ($st, $b) = api(GET => '/api/chat-rooms?limit=0', $token);
    is($st, 422, 'a bad argument with a good token: 422, after the check');
    is(ref $b->{detail}, 'ARRAY', '... in the contract shape');

    # a user of its own: two logins within a second get the same token
    my $other = login_user(register_user());
    ($st) = api(POST => '/api/auth/logout', $other);
    is($st, 200, 'another token revoked');

    my $res;
    ($st, $b, $res) = api(GET => '/api/chat-rooms?limit=0', $other);
    is($st, 401, 'a bad argument with a revoked token: 401 first');
    is($b->{detail}, 'Not authenticated', '... the 401 body');
    is($res->{headers}{'www-authenticate'}, 'Bearer',
       '... and only its headers');
    unlike($res->{raw_headers} // '', qr/Unprocessable/,
           '... nothing of the 422');

    freeze('redis');
    ($st, $b) = api(GET => '/api/chat-rooms?limit=0', $token);
    thaw('redis');
    is($st, 503, 'a bad argument while the token cannot be checked: 503');

    served_again('Redis serves again after SIGCONT');
}

# ---- a client that leaves while its request waits

{
    my $offset = $ngx->error_log_size;
    my $alog = $ngx->servroot . '/logs/access.log';
    my $before = -s $alog // 0;

    freeze('mariadb');

    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $ngx->port,
                                     Proto => 'tcp')
        or die "connect: $!";
    print {$sock} "GET /api/profile/me?gone=1 HTTP/1.1\r\nHost: localhost\r\n"
                . "Authorization: Bearer $token\r\n\r\n";
    sleep 0.5;
    close $sock;

    # the worker stays responsive meanwhile
    my $t0 = time;
    my $res = http_request(GET => $ngx->url('/health'), {}, undef, 2);
    is($res->{status}, 200, 'while the query hangs, /health answers');
    cmp_ok(time - $t0, '<', 0.25, '... at once');

    sleep 2.5;      # past the MariaDB timeout: the late result arrives
    thaw('mariadb');
    sleep 0.3;

    open(my $fh, '<', $alog) or die "$alog: $!";
    seek($fh, $before, 0);
    my @lines = grep { /gone=1/ } <$fh>;
    close $fh;

    is(scalar @lines, 1, 'the request that lost its client is logged once');
    like($lines[0] // '', qr/" 499 /, '... as 499');

    my $log = log_since($offset);
    like($log, qr/client prematurely closed connection/,
         'the worker noticed the client leave');
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert');

    served_again('the same worker serves the next request');
}

unlike($ngx->read_error_log(0), qr/exited on signal|\[alert\]/,
       'no crash, no alert in the whole run');

stop_nginx($ngx);

done_testing();
