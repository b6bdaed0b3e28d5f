# Presence expiry (API.md 3.13): when "user:online:{id}" expires, the user
# is offline in MariaDB, "user:last_seen:{id}" is set and
# "user:status:{id}" hears about it.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(time sleep);

my ($ngx) = chat_nodes(1, 'location /api/ { chat_user; }');

$ChatStack::Base = $ngx->url('');

my $user = register_user();
login_user($user);
my $id = $user->{id};

is(mysql_cmd("SELECT is_online FROM users WHERE id = $id"), '1',
   'online after login');

# a subscriber for the status channel
my $subpid = open(my $sub, '-|', 'redis-cli', '-p', $ENV{TEST_NGINX_REDIS_PORT} // 16379,
     '--raw', 'SUBSCRIBE', "user:status:$id") or die "redis-cli: $!";
sleep 0.3;

redis_cmd('PEXPIRE', "user:online:$id", 200);

my $until = time() + 10;
my $row = '';

while (time() < $until) {
    $row = mysql_cmd("SELECT is_online, last_seen_at IS NOT NULL "
                     . "FROM users WHERE id = $id");
    last if $row eq "0\t1";
    sleep 0.2;
}

is($row, "0\t1", 'offline, with last_seen_at, after the key expired');
like(redis_cmd('GET', "user:last_seen:$id"),
     qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$/, 'user:last_seen set');
my $ttl = redis_cmd('TTL', "user:last_seen:$id");
ok($ttl > 604000, "for a week ($ttl s)");

my $got = '';
{
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 3;
    eval {
        while (my $line = <$sub>) {
            $got = $line if $line =~ /is_online/;
            last if $got;
        }
    };
    alarm 0;
}
like($got, qr/^\{"user_id": $id, "is_online": false, "last_seen": "[^"]+", "timestamp": "[^"]+"\}$/,
     'published on user:status');

kill 'TERM', $subpid;
close $sub;

stop_nginx($ngx);

done_testing();
