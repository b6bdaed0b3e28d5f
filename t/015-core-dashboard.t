# The Grafana dashboard (grafana/nginx-chat.json) imports as a dashboard
# (valid JSON, panels with ids, positions, a datasource input) and shows
# what the modules export: every metric a panel queries is one the stack's
# /metrics describes.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Cwd qw(getcwd);

my $file = getcwd() . '/grafana/nginx-chat.json';

open my $fh, '<', $file or die "$file: $!";
my $dash = eval { JSON::PP->new->decode(do { local $/; <$fh> }) };
close $fh;

ok($dash, 'the dashboard is JSON') or diag($@);
is($dash->{uid}, 'nginx-chat', '... with a uid');
is($dash->{__inputs}[0]{pluginId}, 'prometheus',
   '... asking for a Prometheus datasource on import');

my @panels = grep { $_->{type} ne 'row' } @{ $dash->{panels} };
cmp_ok(scalar @panels, '>=', 10, scalar(@panels) . ' panels');

my %ids;
$ids{ $_->{id} }++ for @{ $dash->{panels} };
is(scalar(grep { $_ > 1 } values %ids), 0, 'panel ids are unique');
is(scalar(grep { !$_->{gridPos} || !@{ $_->{targets} // [] } } @panels), 0,
   'every panel has a position and a query');

my %used;
for my $p (@panels) {
    for my $t (@{ $p->{targets} }) {
        $used{$1} = 1 while $t->{expr} =~ /\b(chat_[a-z_]+)/g;
    }
}

# what the stack's nginx describes: "# TYPE <family> <kind>"
my $port = $ENV{TEST_NGINX_STACK_PORT} // 18080;
my $res = http_request(GET => "http://127.0.0.1:$port/metrics");
is($res->{status}, 200, "the stack's /metrics");

my %family = map { $_ => 1 } ($res->{body} // '') =~ /^# TYPE (\S+) /mg;

for my $name (sort keys %used) {
    (my $base = $name) =~ s/_(bucket|sum|count)$//;
    ok($family{$name} || $family{$base}, "the dashboard's $name is exported");
}

my @unshown = grep { !$used{$_} && !$used{"${_}_bucket"} } sort keys %family;
note("exported but on no panel: @unshown") if @unshown;

done_testing();
