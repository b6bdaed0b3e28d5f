# Profile images through the gateway of the stack "./build.sh test" starts
# from conf/nginx.conf, as "./build.sh run" does: a root master, workers as
# nginx's default user.  The upload directory belongs to the workers' user,
# an upload answers 200 and nginx serves the same bytes under its URL.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;

my $port = $ENV{TEST_NGINX_STACK_PORT};
my $work = $ENV{TEST_NGINX_WORK};

plan skip_all => 'needs the stack of "./build.sh test"'
    unless $port && $work && -f "$work/nginx-test/logs/nginx.pid";

my $prefix = "$work/nginx-test";
my $base = "http://127.0.0.1:$port";

$ChatStack::Base = $base;

# the workers: children of the master, their user
my $master = do {
    open(my $fh, '<', "$prefix/logs/nginx.pid") or die "pid: $!";
    my $pid = <$fh>;
    chomp $pid;
    $pid;
};

my @workers = grep { /\S/ } split /\n/,
    `ps -o user= --ppid $master`;
s/^\s+|\s+$//g for @workers;

ok(scalar @workers, "the master $master has workers");

my $master_user = `ps -o user= -p $master`;
$master_user =~ s/^\s+|\s+$//g;

SKIP: {
    skip 'the stack is not run by root', 1 unless $master_user eq 'root';
    is_deeply([sort { $a cmp $b } @workers],
              [map { 'nobody' } @workers],
              'a root master, workers as nobody');
}

my $worker_user = $workers[0] // 'nobody';
my $worker_uid = getpwnam($worker_user);

my $user = register_user();
my $token = login_user($user);

my ($status, $json, $res, $png) = upload_png($token);

is($status, 200, 'an upload through the gateway: 200')
    or diag($res->{body});

my $url = ref $json eq 'HASH' ? $json->{profile_image_url} // '' : '';

like($url, qr{^/uploads/$user->{id}-[0-9a-f]{16}\.png$}, 'the image URL');

SKIP: {
    skip 'no image URL', 3 unless $url =~ m{^/uploads/};

    $res = http_request(GET => "$base$url");
    is($res->{status}, 200, 'the image is served');
    ok($res->{body} eq $png, '... with the same bytes');

    my @st = stat("$prefix$url");
    is($st[4] // -1, $worker_uid, "the file belongs to $worker_user");
}

my @st = stat("$prefix/uploads");
is($st[4] // -1, $worker_uid,
   "the upload directory belongs to the workers' user ($worker_user)");

# a second upload replaces the first, whose file is removed
if ($url =~ m{^/uploads/}) {
    ($status, $json) = upload_png($token);
    is($status, 200, 'a second upload: 200');
    ok(!-e "$prefix$url", 'the previous image is removed');
}

done_testing();
